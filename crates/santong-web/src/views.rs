//! View models and their askama templates (`templates/`). Views receive translated strings and
//! plain data; they never query anything.

use askama::Template;

use crate::i18n::{Lang, Tr};
use crate::shell::Ctx;

/// The frame of every page: title, language, stylesheet and the language switch.
pub struct Chrome {
    pub t: Tr,
    pub title: String,
    pub css: &'static str,
    pub switch: Vec<LangLink>,
    /// Display name of the signed-in user.
    pub user: Option<String>,
    /// The session's CSRF token, for the sign-out form in the header.
    pub csrf: String,
    /// Admin pages this user may open: (href, label).
    pub admin: Vec<(&'static str, String)>,
}

pub struct LangLink {
    pub label: String,
    pub href: String,
    pub current: bool,
    pub tag: &'static str,
}

impl Chrome {
    pub fn new(ctx: &Ctx, title: String) -> Self {
        let next = strip_lang_param(&ctx.path_and_query);
        let switch = Lang::ALL
            .iter()
            .map(|l| LangLink {
                label: Tr::new(*l).t("lang-name"),
                href: format!("/lang/{}?next={}", l.tag(), percent_encode(&next)),
                current: *l == ctx.lang,
                tag: l.tag(),
            })
            .collect();
        let t = ctx.tr();
        let (user, csrf, admin) = match &ctx.user {
            Some(p) => {
                use santong_domain::identity::Permission;
                let mut admin = vec![];
                if p.has(Permission::UsersView) {
                    admin.push(("/admin/users", t.t("nav-users")));
                } else if p.has(Permission::StudentPasswordsReset) {
                    admin.push(("/admin/users", t.t("nav-students")));
                }
                if p.has(Permission::RegistryView) {
                    admin.push(("/schools", t.t("nav-schools")));
                    admin.push(("/transfers", t.t("nav-transfers")));
                    admin.push(("/moves", t.t("nav-moves")));
                    admin.push(("/duplicates", t.t("nav-duplicates")));
                    admin.push(("/quality", t.t("nav-quality")));
                }
                if p.has(Permission::RegistryManage) {
                    admin.push(("/year-end", t.t("nav-year-end")));
                }
                if p.has(Permission::AuditRead) {
                    admin.push(("/admin/audit", t.t("nav-audit")));
                }
                if p.has(Permission::GrantsManage) {
                    admin.push(("/admin/clients", t.t("nav-clients")));
                }
                (Some(p.user.display_name.clone()), p.csrf.clone(), admin)
            }
            None => (None, String::new(), vec![]),
        };
        Self {
            t,
            title,
            css: crate::assets::css_url(),
            switch,
            user,
            csrf,
            admin,
        }
    }
}

/// Removes `lang=` from a path's query so the switch's choice is not overridden on return.
pub fn strip_lang_param(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("lang=") && !kv.is_empty())
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn render(t: &impl Template) -> Result<String, askama::Error> {
    t.render()
}

/// A page with personal content: rendered, and never stored by a cache.
pub fn private_page(t: &impl Template) -> Result<axum::response::Response, crate::AppError> {
    use axum::response::IntoResponse;
    let mut res =
        axum::response::Html(t.render().map_err(crate::shell::template_error)?).into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// Page navigation under a list.
pub struct Pager {
    pub summary: String,
    pub prev: Option<(String, String)>,
    pub next: Option<(String, String)>,
}

impl Pager {
    /// A list's pager: "page p of n (total)", with previous and next links made by `href`.
    pub fn new(tr: &Tr, page: u32, pages: u64, total: u64, href: impl Fn(u32) -> String) -> Pager {
        Pager {
            summary: tr.f(
                "pager-summary",
                &[
                    ("page", crate::i18n::n(page)),
                    ("pages", crate::i18n::n(pages as f64)),
                    ("total", crate::i18n::n(total as f64)),
                ],
            ),
            prev: (page > 1).then(|| (href(page - 1), tr.t("pager-prev"))),
            next: (u64::from(page) < pages).then(|| (href(page + 1), tr.t("pager-next"))),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub c: Chrome,
    pub status: u16,
    pub detail: String,
    pub fields: Vec<String>,
    pub request_id: String,
}

pub struct Card {
    pub title: String,
    pub body: String,
    pub link: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub c: Chrome,
    pub intro: String,
    pub cards: Vec<Card>,
}

/// One row of a region table, already translated.
pub struct RegionRowView {
    pub code: String,
    pub name: String,
    pub level: String,
    pub parent: String,
    pub children: i64,
}

pub struct Crumb {
    pub label: String,
    pub href: Option<String>,
}

#[derive(Template)]
#[template(path = "regions.html")]
pub struct RegionsPage {
    pub c: Chrome,
    pub crumbs: Vec<Crumb>,
    pub heading: String,
    pub facts: Vec<(String, String)>,
    pub notice: Option<String>,
    pub successors: Vec<(String, String)>,
    pub history: Vec<(String, String, String, String)>,
    pub list_title: String,
    pub q: String,
    pub search_action: String,
    pub rows: Vec<RegionRowView>,
    pub empty: String,
    pub sort_links: Vec<(String, String, bool)>,
    pub pager: Pager,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lang_is_stripped_and_next_encoded() {
        assert_eq!(
            strip_lang_param("/regions?lang=en&page=2"),
            "/regions?page=2"
        );
        assert_eq!(strip_lang_param("/regions?lang=en"), "/regions");
        assert_eq!(strip_lang_param("/"), "/");
        assert_eq!(
            percent_encode("/r?q=深圳&p=1"),
            "%2Fr%3Fq%3D%E6%B7%B1%E5%9C%B3%26p%3D1"
        );
    }
}
