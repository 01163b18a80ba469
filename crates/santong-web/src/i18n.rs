//! Message catalogues (Fluent) and the choice of language per request.
//!
//! zh-CN is the default and the fallback; English is chosen by `?lang=`, then the `lang` cookie
//! set by the language switch, then `Accept-Language`. The catalogues are compiled into the binary.

use std::borrow::Cow;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use unic_langid::{LanguageIdentifier, langid};

/// A language the interface is translated into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::ZhCn, Lang::En];

    /// The BCP 47 tag used in `lang=` attributes, cookies and `?lang=`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Accepts `zh`, `zh-CN`, `zh-Hans`, `en`, `en-US` … (case-insensitive).
    pub fn parse(s: &str) -> Option<Lang> {
        let primary = s.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The best match for an `Accept-Language` header, honouring q-values; zh-CN when none fits.
    pub fn negotiate(accept: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in accept.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("");
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::parse(tag)
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    fn id(self) -> LanguageIdentifier {
        match self {
            Lang::ZhCn => langid!("zh-CN"),
            Lang::En => langid!("en"),
        }
    }
}

const SOURCES: [(Lang, &str); 2] = [
    (Lang::ZhCn, include_str!("../i18n/zh-CN.ftl")),
    (Lang::En, include_str!("../i18n/en.ftl")),
];

/// All catalogues, parsed once.
pub struct Catalog {
    bundles: Vec<(Lang, FluentBundle<FluentResource>)>,
}

impl Catalog {
    pub fn global() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            let bundles = SOURCES
                .iter()
                .map(|(lang, src)| {
                    let res = FluentResource::try_new((*src).to_owned())
                        .unwrap_or_else(|(_, errs)| panic!("{} catalogue: {errs:?}", lang.tag()));
                    let mut b = FluentBundle::new_concurrent(vec![lang.id()]);
                    // Isolation marks would show as stray characters in terminals and tests.
                    b.set_use_isolating(false);
                    b.add_resource(res)
                        .unwrap_or_else(|errs| panic!("{} catalogue: {errs:?}", lang.tag()));
                    (*lang, b)
                })
                .collect();
            Catalog { bundles }
        })
    }

    fn bundle(&self, lang: Lang) -> &FluentBundle<FluentResource> {
        self.bundles
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, b)| b)
            .unwrap_or(&self.bundles[0].1)
    }

    /// The message `key` in `lang` (falling back to zh-CN, then to the key itself).
    pub fn message(&self, lang: Lang, key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        let mut fargs = FluentArgs::new();
        for (k, v) in args {
            fargs.set(*k, v.clone());
        }
        for l in [lang, Lang::ZhCn] {
            let bundle = self.bundle(l);
            if let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) {
                let mut errors = vec![];
                let out = bundle.format_pattern(pattern, Some(&fargs), &mut errors);
                if !errors.is_empty() {
                    tracing::warn!(key, ?errors, "message formatting");
                }
                return out.into_owned();
            }
        }
        tracing::warn!(key, "missing message");
        key.to_owned()
    }

    /// Keys defined in `lang`'s catalogue (for the completeness test).
    pub fn keys(lang: Lang) -> Vec<String> {
        let src = SOURCES
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, s)| *s)
            .unwrap_or("");
        src.lines()
            .filter(|l| !l.starts_with([' ', '#', '\t']) && l.contains(" ="))
            .filter_map(|l| l.split(" =").next())
            .map(str::to_owned)
            .collect()
    }
}

/// The translator a request renders with.
#[derive(Debug, Clone, Copy)]
pub struct Tr {
    pub lang: Lang,
}

impl Tr {
    pub fn new(lang: Lang) -> Self {
        Self { lang }
    }

    /// A message without arguments.
    pub fn t(&self, key: &str) -> String {
        Catalog::global().message(self.lang, key, &[])
    }

    /// A message with arguments.
    pub fn f(&self, key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        Catalog::global().message(self.lang, key, args)
    }

    pub fn tag(&self) -> &'static str {
        self.lang.tag()
    }
}

/// Shorthand for a string argument.
pub fn s<'a>(v: impl Into<Cow<'a, str>>) -> FluentValue<'a> {
    FluentValue::String(v.into())
}

/// Shorthand for a number argument.
pub fn n<'a>(v: impl Into<f64>) -> FluentValue<'a> {
    FluentValue::from(v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_key() {
        let zh = Catalog::keys(Lang::ZhCn);
        let en = Catalog::keys(Lang::En);
        assert!(zh.len() > 50);
        for k in &zh {
            assert!(en.contains(k), "en.ftl lacks {k}");
        }
        for k in &en {
            assert!(zh.contains(k), "zh-CN.ftl lacks {k}");
        }
    }

    #[test]
    fn formats_with_arguments_and_plurals() {
        let c = Catalog::global();
        assert_eq!(
            c.message(
                Lang::En,
                "regions-search-results",
                &[("q", s("Shen")), ("count", n(1))]
            ),
            "Results for \"Shen\": one region"
        );
        assert_eq!(
            c.message(
                Lang::ZhCn,
                "error-region-not-found",
                &[("code", s("999999"))]
            ),
            "没有代码为 999999 的行政区划。"
        );
        assert_eq!(c.message(Lang::En, "no-such-key", &[]), "no-such-key");
    }

    #[test]
    fn negotiation() {
        assert_eq!(Lang::negotiate("en-US,en;q=0.9"), Lang::En);
        assert_eq!(Lang::negotiate("fr-FR, en;q=0.5, zh-CN;q=0.8"), Lang::ZhCn);
        assert_eq!(Lang::negotiate("fr"), Lang::ZhCn);
        assert_eq!(Lang::negotiate(""), Lang::ZhCn);
        assert_eq!(Lang::parse("zh-Hans"), Some(Lang::ZhCn));
        assert_eq!(Lang::parse("EN_gb"), Some(Lang::En));
    }
}
