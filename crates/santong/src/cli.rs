//! Admin commands for scripted provisioning: every admin action of the pages has a command here.
//! They act as `cli` in the audit log (an operator with shell access to the server).

use anyhow::{Context, bail};
use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::Db;
use santong_storage::audit::{self, Verification};
use santong_storage::identity::{Actor, Identity, IdentityError};
use santong_storage::regions::Regions;

use crate::{AuditAction, UserAction};

/// `440305` → region; `440305/1144030501` → school in that county; `000000` or nothing → nation.
async fn parse_at(db: &Db, at: Option<&str>) -> anyhow::Result<Node> {
    let Some(at) = at
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "000000")
    else {
        return Ok(Node::Nation);
    };
    let (region, school) = match at.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (at, None),
    };
    let code = RegionCode::parse(region).map_err(|e| anyhow::anyhow!("--at {at}: {e}"))?;
    if Regions(db).get(code).await?.is_none() {
        bail!("--at {at}: no current region has the code {code}");
    }
    match school {
        None => Ok(Node::Region(code)),
        Some(s) => {
            let school = SchoolCode::parse(s)
                .with_context(|| format!("--at {at}: a school code has ten digits"))?;
            if code.is_province_shaped() || code.is_prefecture_shaped() {
                bail!(
                    "--at {at}: a school lies in a county; give the county's code before the slash"
                );
            }
            Ok(Node::School {
                code: school,
                county: code,
            })
        }
    }
}

fn explain(e: IdentityError) -> anyhow::Error {
    match e {
        IdentityError::Password(problems) => {
            let list: Vec<_> = problems.iter().map(|p| format!("{p:?}")).collect();
            anyhow::anyhow!("the password does not meet the policy: {}", list.join(", "))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

pub async fn user(db: &Db, action: &UserAction) -> anyhow::Result<()> {
    let id = Identity(db);
    match action {
        UserAction::Add {
            username,
            name,
            password,
            role,
            at,
            ..
        } => {
            let node = parse_at(db, at.as_deref()).await?;
            let role = role
                .as_deref()
                .map(|r| Role::parse(r).with_context(|| format!("--role {r}: unknown role")))
                .transpose()?;
            let (system_role, grant) = match role {
                Some(r) if r.is_admin_duty() => (Some(r), None),
                Some(r) => (None, Some((r, node))),
                None => (None, None),
            };
            let new = santong_storage::identity::NewUser {
                username: username.clone(),
                display_name: name.clone().unwrap_or_else(|| username.clone()),
                password: password.clone(),
                home: if system_role.is_some() {
                    Node::Nation
                } else {
                    node
                },
                system_role,
                grant,
            };
            let (uid, generated) = id.create_user(Actor::Cli, new).await.map_err(explain)?;
            println!(
                "created user {} ({uid})",
                username.trim().to_ascii_lowercase()
            );
            if let Some(pw) = generated {
                println!("password: {pw}");
            }
            println!("the password must be changed at first sign-in");
        }
        UserAction::ResetPassword {
            username, password, ..
        } => {
            let pw = id
                .reset_password_by_name(username, password.as_deref())
                .await
                .map_err(explain)?;
            if password.is_none() {
                println!("password: {pw}");
            }
            println!("password reset for {username}; it must be changed at next sign-in");
        }
    }
    Ok(())
}

pub async fn audit(db: &Db, action: &AuditAction) -> anyhow::Result<()> {
    match action {
        AuditAction::Verify { .. } => match audit::verify(db).await? {
            Verification::Intact { events, from_seq } => {
                println!("audit chain intact: {events} events verified after event {from_seq}");
            }
            Verification::Broken { seq, reason } => {
                bail!("audit chain broken at event {seq}: {reason}");
            }
        },
        AuditAction::Prune { keep_days, .. } => {
            // The Cybersecurity Law (art. 21) asks for at least six months of logs.
            if *keep_days < 180 {
                bail!("--keep-days {keep_days}: the audit log is kept at least 180 days");
            }
            let removed = audit::prune(db, *keep_days).await?;
            println!(
                "removed {removed} audit events older than {keep_days} days; a checkpoint keeps the chain verifiable"
            );
        }
    }
    Ok(())
}
