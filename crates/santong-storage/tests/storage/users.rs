use santong_storage::users::Users;
use santong_testkit::TestDb;

santong_testkit::conformance!(
    initial_admin_is_created_once,
    concurrent_starts_create_one_admin
);

async fn initial_admin_is_created_once(t: TestDb) {
    let users = Users(&t.db);
    let admin = users
        .ensure_initial_admin()
        .await
        .unwrap()
        .expect("created");
    assert_eq!(admin.username, "admin");
    assert!(admin.password.len() >= 16);
    assert!(
        users
            .verify_password("admin", &admin.password)
            .await
            .unwrap()
    );
    assert!(!users.verify_password("admin", "wrong").await.unwrap());
    assert!(
        users.ensure_initial_admin().await.unwrap().is_none(),
        "printed only once"
    );
}

async fn concurrent_starts_create_one_admin(t: TestDb) {
    let other = santong_storage::Db::open(&t.options()).await.unwrap();
    let (u1, u2) = (Users(&t.db), Users(&other));
    let (a, b) = tokio::join!(u1.ensure_initial_admin(), u2.ensure_initial_admin());
    let created = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
    assert_eq!(created, 1);
    other.close().await;
}
