use santong_storage::schema::describe;
use santong_testkit::{BackendKind, TestDb};

/// Both migration folders must build the same schema: tables, columns, type classes, nullability
/// and indexes. Runs only where PostgreSQL is configured (always in CI).
#[tokio::test]
async fn sqlite_and_postgres_schemas_match() {
    let Some(pg) = TestDb::new(BackendKind::Postgres).await else {
        return;
    };
    let lite = TestDb::new(BackendKind::Sqlite).await.unwrap();
    let a = describe(&lite.db).await.unwrap();
    let b = describe(&pg.db).await.unwrap();
    assert!(
        a.len() >= 7,
        "tables found: {:?}",
        a.keys().collect::<Vec<_>>()
    );
    for (name, table) in &a {
        for c in &table.columns {
            assert!(
                !c.class.starts_with("other:"),
                "{name}.{}: unmapped type {}",
                c.name,
                c.class
            );
        }
    }
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the two backends have different tables"
    );
    for (name, ta) in &a {
        let tb = &b[name];
        assert_eq!(
            ta.columns, tb.columns,
            "columns of {name} differ (left SQLite, right PostgreSQL)"
        );
        assert_eq!(
            ta.indexes, tb.indexes,
            "indexes of {name} differ (left SQLite, right PostgreSQL)"
        );
    }
}

santong_testkit::conformance!(migrations_are_idempotent, reopening_keeps_data);

async fn migrations_are_idempotent(t: TestDb) {
    t.db.migrate().await.unwrap();
    t.db.migrate().await.unwrap();
}

async fn reopening_keeps_data(t: TestDb) {
    santong_storage::settings::Settings(&t.db)
        .set("k", "v")
        .await
        .unwrap();
    let again = santong_storage::Db::open(&t.options()).await.unwrap();
    assert_eq!(
        santong_storage::settings::Settings(&again)
            .get("k")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    again.close().await;
}

#[tokio::test]
async fn sqlite_runs_in_wal_with_foreign_keys() {
    let t = TestDb::new(BackendKind::Sqlite).await.unwrap();
    let pragmas = santong_storage::db::sqlite_pragmas(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pragmas.journal_mode, "wal");
    assert_eq!(pragmas.foreign_keys, 1);
    assert!(pragmas.busy_timeout_ms >= 5000, "{pragmas:?}");
    assert_eq!(pragmas.synchronous, 1, "NORMAL");
}
