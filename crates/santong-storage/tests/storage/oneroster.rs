use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use santong_domain::identity::{Role, Scope};
use santong_domain::oneroster::ROSTER_FILES;
use santong_domain::region::RegionCode;
use santong_domain::registry::SchoolYear;
use santong_storage::classes::{Classes, NewClass};
use santong_storage::identity::Actor;
use santong_storage::oneroster::{OneRoster, OneRosterError, Source, Target};
use santong_storage::registry::today;
use santong_storage::students::Students;
use santong_testkit::TestDb;
use uuid::Uuid;

use super::students::{id, node, person, pupil, ready};

santong_testkit::conformance!(
    an_export_has_every_required_column_and_comes_back_unchanged,
    a_vendor_feed_places_students_in_bulk_and_delta_and_reports_bad_rows,
    bad_packages_are_refused_with_nothing_written,
    one_class_per_year_and_next_years_classes,
);

const SCHOOL: &str = "1144030501";

/// The files of an export zip by name, as text.
fn unzip(path: &Path) -> HashMap<String, String> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        out.insert(f.name().unwrap().to_string(), s);
    }
    out
}

fn rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

async fn members(t: &TestDb, class: Uuid) -> Vec<String> {
    let mut names: Vec<String> = Classes(&t.db)
        .members(&Scope::everything(), class, today())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

/// Three third-graders at the school (one with an ID number), one at the other school, a class
/// with two of them and a head teacher.
async fn school_with_a_class(t: &TestDb) -> (Uuid, Vec<Uuid>, String) {
    ready(t).await;
    let s = Students(&t.db);
    let with_id = id("440305", "20170302", 11);
    let mut ids = vec![];
    for (name, number) in [
        ("王小明", with_id.clone()),
        ("欧阳娜娜", String::new()),
        ("李雷", String::new()),
    ] {
        ids.push(
            s.enrol(Actor::Cli, SCHOOL, &pupil(name, "2017-03-02", number, "3"))
                .await
                .unwrap()
                .student
                .id,
        );
    }
    s.enrol(
        Actor::Cli,
        "1144030502",
        &pupil("赵六", "2017-03-01", String::new(), "3"),
    )
    .await
    .unwrap();
    person(t, "head.a", Role::SchoolAdmin, node(SCHOOL, "440305")).await;
    person(t, "teacher.a", Role::Teacher, node(SCHOOL, "440305")).await;
    let class = Classes(&t.db)
        .create(
            Actor::Cli,
            SCHOOL,
            &NewClass {
                school_year: String::new(),
                grade: "3".into(),
                name: "三(1)班".into(),
                head_teacher: "teacher.a".into(),
            },
        )
        .await
        .unwrap();
    Classes(&t.db)
        .assign(Actor::Cli, &Scope::everything(), class.id, &ids[..2], "")
        .await
        .unwrap();
    (class.id, ids, with_id)
}

async fn an_export_has_every_required_column_and_comes_back_unchanged(t: TestDb) {
    let (class, _, with_id) = school_with_a_class(&t).await;
    let head = person(&t, "head.b", Role::SchoolAdmin, node(SCHOOL, "440305")).await;
    let year = SchoolYear::of_date(today());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("or.zip");
    let or = OneRoster(&t.db);
    let counts = or
        .export(
            Actor::Cli,
            &Scope::everything(),
            &Target::School(SCHOOL.into()),
            year,
            None,
            std::fs::File::create(&path).unwrap(),
        )
        .await
        .unwrap();
    // 3 students and 3 accounts; 2 members and the head teacher.
    assert_eq!(
        (counts.users, counts.enrollments, counts.classes),
        (6, 3, 1)
    );
    let files = unzip(&path);
    let manifest = rows(&files["manifest.csv"]);
    assert_eq!(manifest[0], ["propertyName", "value"]);
    let prop = |k: &str| {
        manifest
            .iter()
            .find(|r| r[0] == k)
            .map(|r| r[1].clone())
            .unwrap()
    };
    assert_eq!(prop("oneroster.version"), "1.2");
    assert_eq!(prop("file.lineItems"), "absent");
    for spec in ROSTER_FILES {
        assert_eq!(prop(spec.property), "bulk", "{}", spec.name);
        let table = rows(&files[spec.name]);
        assert_eq!(table[0], spec.columns, "{} header", spec.name);
        for row in &table[1..] {
            assert_eq!(row.len(), spec.columns.len(), "{}", spec.name);
            for r in spec.required {
                let i = spec.columns.iter().position(|c| c == r).unwrap();
                assert!(!row[i].is_empty(), "{} {r} empty in {row:?}", spec.name);
            }
        }
    }
    let all: String = files.values().cloned().collect();
    // Masked: no ID number anywhere, no birth date; the other school is not in it.
    assert!(!all.contains(&with_id), "ID number leaked");
    assert!(
        rows(&files["demographics.csv"])[1..]
            .iter()
            .all(|r| r[3].is_empty())
    );
    assert!(!all.contains("赵"), "other school's student");
    let users = rows(&files["users.csv"]);
    assert!(users.iter().any(|u| u[7] == "欧阳" && u[6] == "娜娜"));
    // The same file, imported back by the school's administrator, changes nothing.
    let who = Actor::User {
        principal: &head,
        ip: "10.0.0.1",
    };
    let report = or
        .import(who, Source::Zip(&path), false, false)
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(report.committed);
    assert_eq!(
        (
            report.classes_new,
            report.classes_renamed,
            report.placed,
            report.ended,
            report.heads
        ),
        (0, 0, 0, 0, 0),
    );
    assert_eq!(members(&t, class).await, ["欧阳娜娜", "王小明"]);
    // A full export carries the student number (an ID-bearing G-number) and birth dates.
    let full = dir.path().join("full.zip");
    or.export(
        Actor::Cli,
        &Scope::everything(),
        &Target::School(SCHOOL.into()),
        year,
        Some("与区平台核对"),
        std::fs::File::create(&full).unwrap(),
    )
    .await
    .unwrap();
    let files = unzip(&full);
    assert!(files["users.csv"].contains(&format!("G{with_id}")));
    assert!(files["demographics.csv"].contains("2017-03-02"));
    // Scope: another school's administrator, or a school asking for its county, finds nothing.
    let other = person(
        &t,
        "head.c",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let their = other.scope(santong_domain::identity::Permission::RegistryView);
    let sink = std::io::Cursor::new(Vec::new());
    let got = or
        .export(
            Actor::Cli,
            &their,
            &Target::School(SCHOOL.into()),
            year,
            None,
            sink,
        )
        .await;
    assert!(matches!(got, Err(OneRosterError::NotFound)), "{got:?}");
    let got = or
        .export(
            Actor::Cli,
            &their,
            &Target::Region(RegionCode::parse("440305").unwrap()),
            year,
            None,
            std::io::Cursor::new(Vec::new()),
        )
        .await;
    assert!(matches!(got, Err(OneRosterError::NotFound)), "{got:?}");
    // The county exports both schools.
    let county = or
        .export(
            Actor::Cli,
            &Scope::everything(),
            &Target::Region(RegionCode::parse("440305").unwrap()),
            year,
            None,
            std::io::Cursor::new(Vec::new()),
        )
        .await
        .unwrap();
    assert_eq!((county.orgs, county.users), (3, 8));
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

/// A vendor's feed: blank status cells, vendor columns, quoted multi-value cells, a parent, a
/// user nobody knows, a school the importer does not manage.
/// `number` is 王小明's student number, `lei` and `nana` the others' ids.
fn vendor_feed(dir: &Path, number: &str, lei: Uuid, nana: Uuid, enrollments: &str, delivery: &str) {
    write(
        dir,
        "manifest.csv",
        &format!(
            "propertyName,value\nmanifest.version,1.0\noneroster.version,1.2\n\
            file.orgs,bulk\nfile.academicSessions,bulk\nfile.courses,bulk\nfile.classes,bulk\n\
            file.users,bulk\nfile.roles,bulk\nfile.enrollments,{delivery}\nfile.demographics,absent\n\
            source.systemName,VendorLMS\n"
        ),
    );
    write(
        dir,
        "orgs.csv",
        "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId,ext_vendor_id\n\
        org-1,,,第一小学,school,1144030501,,77\n\
        org-2,active,,第二小学,school,1144030502,,78\n\
        dist,,,南山区,district,440305,,\n",
    );
    let y = SchoolYear::of_date(today()).0;
    write(
        dir,
        "academicSessions.csv",
        &format!(
            "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear\n\
            sy,,,{y}学年,schoolYear,{y}-09-01,{}-08-31,,{}\n",
            y + 1,
            y + 1
        ),
    );
    write(
        dir,
        "courses.csv",
        "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes\n\
        c3,,,sy,三年级,,\"03,04\",org-1,,\n",
    );
    write(
        dir,
        "classes.csv",
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods,metadata.room\n\
        k2,,,三(2)班,\"03,04\",c3,,homeroom,,org-1,sy,,,,201\n\
        k9,,,三(9)班,03,c3,,homeroom,,org-2,sy,,,,\n",
    );
    write(
        dir,
        "users.csv",
        &format!(
            "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,resourceSourcedIds,preferredGivenName,preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns\n\
            u1,,,true,s1,,小明,王,,{number},,,,,03,,,,,,,org-1,\n\
            {lei},,,true,s2,,雷,李,,,,,,,03,,,,,,,org-1,\n\
            {nana},,,true,x,,娜娜,欧阳,,,,,,,\"03,04\",,,,,,,org-1,\n\
            p1,,,true,mum,,芳,王,,,,,,,,,,,,,,org-1,\n\
            ghost,,,true,ghost,,无,名,,,,,,,03,,,,,,,org-1,\n\
            t1,,,true,teacher.a,,a,teacher,,,,,,,,,,,,,,org-1,\n"
        ),
    );
    write(
        dir,
        "roles.csv",
        "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId\n\
        r1,,,p1,primary,parent,,,org-1,\n",
    );
    write(
        dir,
        "enrollments.csv",
        &format!(
            "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\n{enrollments}"
        ),
    );
}

async fn a_vendor_feed_places_students_in_bulk_and_delta_and_reports_bad_rows(t: TestDb) {
    let (class1, ids, with_id) = school_with_a_class(&t).await;
    let head = person(&t, "head.b", Role::SchoolAdmin, node(SCHOOL, "440305")).await;
    let who = Actor::User {
        principal: &head,
        ip: "10.0.0.1",
    };
    let number = format!("G{with_id}");
    let dir = tempfile::tempdir().unwrap();
    // 王小明 (matched by student number) moves to 三(2)班 with 李雷; the ghost is nobody.
    let (nana, lei) = (ids[1], ids[2]);
    vendor_feed(
        dir.path(),
        &number,
        lei,
        nana,
        &format!(
            "e1,,,k2,org-1,u1,student,false,,\n\
            e2,,,k2,org-1,{lei},student,false,,\n\
            e3,,,k2,org-1,t1,teacher,true,,\n\
            e4,,,k2,org-1,ghost,student,false,,\n"
        ),
        "bulk",
    );
    let or = OneRoster(&t.db);

    // All or nothing: the other school's org and class, the ghost (twice) are rejected, nothing
    // is written.
    let report = or
        .import(who, Source::Dir(dir.path()), false, false)
        .await
        .unwrap();
    let got: Vec<(&str, u64, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.file, r.line, r.key))
        .collect();
    assert_eq!(
        got,
        [
            ("orgs.csv", 3, "oneroster-org-unknown"),
            ("classes.csv", 3, "oneroster-org-unknown"),
            ("users.csv", 6, "oneroster-user-unknown"),
            ("enrollments.csv", 5, "oneroster-user-unknown"),
        ]
    );
    assert!(!report.committed);
    assert_eq!(members(&t, class1).await, ["欧阳娜娜", "王小明"]);
    let classes = Classes(&t.db)
        .list(
            &Scope::everything(),
            SCHOOL,
            SchoolYear::of_date(today()),
            today(),
        )
        .await
        .unwrap();
    assert_eq!(classes.len(), 1);

    // A dry run of the valid rows writes nothing either.
    let dry = or
        .import(who, Source::Dir(dir.path()), true, true)
        .await
        .unwrap();
    assert!(!dry.committed);
    assert_eq!((dry.classes_new, dry.placed), (1, 2));
    assert_eq!(members(&t, class1).await, ["欧阳娜娜", "王小明"]);

    // The valid rows: the class is opened with its head teacher, 王小明 leaves 三(1)班.
    let report = or
        .import(who, Source::Dir(dir.path()), true, false)
        .await
        .unwrap();
    assert!(report.committed);
    assert_eq!((report.classes_new, report.placed, report.heads), (1, 2, 1));
    assert_eq!(report.ignored, 2, "the district and the parent");
    let classes = Classes(&t.db)
        .list(
            &Scope::everything(),
            SCHOOL,
            SchoolYear::of_date(today()),
            today(),
        )
        .await
        .unwrap();
    let class2 = classes.iter().find(|c| c.name == "三(2)班").unwrap();
    assert_eq!(class2.head_name.as_deref(), Some("teacher.a"));
    assert_eq!(members(&t, class2.id).await, ["李雷", "王小明"]);
    assert_eq!(members(&t, class1).await, ["欧阳娜娜"]);

    // Again: nothing changes.
    let again = or
        .import(who, Source::Dir(dir.path()), true, false)
        .await
        .unwrap();
    assert_eq!((again.classes_new, again.placed, again.ended), (0, 0, 0));

    // A delta with one enrollment to be deleted ends that one only.
    let class2_id = class2.id.to_string();
    vendor_feed(
        dir.path(),
        &number,
        lei,
        nana,
        &format!("e2,tobedeleted,,{class2_id},1144030501,{lei},student,false,,\n"),
        "delta",
    );
    for f in ["users.csv", "classes.csv", "orgs.csv"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.path().join("manifest.csv"))
        .unwrap()
        .replace("file.users,bulk", "file.users,absent")
        .replace("file.classes,bulk", "file.classes,absent")
        .replace("file.orgs,bulk", "file.orgs,absent");
    std::fs::write(dir.path().join("manifest.csv"), manifest).unwrap();
    let delta = or
        .import(who, Source::Dir(dir.path()), false, false)
        .await
        .unwrap();
    assert!(delta.rejected.is_empty(), "{:?}", delta.rejected);
    assert_eq!(delta.ended, 1);
    assert_eq!(members(&t, class2.id).await, ["王小明"]);

    // A bulk enrollments file that no longer lists 王小明 ends his membership.
    vendor_feed(
        dir.path(),
        &number,
        lei,
        nana,
        &format!(
            "e3,,,{class2_id},1144030501,{},teacher,true,,\n",
            head.user.id
        ),
        "bulk",
    );
    for f in ["users.csv", "classes.csv", "orgs.csv"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.path().join("manifest.csv"))
        .unwrap()
        .replace("file.users,bulk", "file.users,absent")
        .replace("file.classes,bulk", "file.classes,absent")
        .replace("file.orgs,bulk", "file.orgs,absent");
    std::fs::write(dir.path().join("manifest.csv"), manifest).unwrap();
    let bulk = or
        .import(who, Source::Dir(dir.path()), false, false)
        .await
        .unwrap();
    assert!(bulk.rejected.is_empty(), "{:?}", bulk.rejected);
    assert_eq!((bulk.ended, bulk.heads), (1, 1));
    assert!(members(&t, class2.id).await.is_empty());

    // Another school's administrator can place nobody here.
    let other = person(
        &t,
        "head.c",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let theirs = or
        .import(
            Actor::User {
                principal: &other,
                ip: "10.0.0.2",
            },
            Source::Dir(dir.path()),
            true,
            false,
        )
        .await
        .unwrap();
    assert_eq!(theirs.heads, 0);
    assert!(
        theirs
            .rejected
            .iter()
            .all(|r| r.key == "oneroster-class-unknown")
    );
}

async fn bad_packages_are_refused_with_nothing_written(t: TestDb) {
    ready(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let or = OneRoster(&t.db);
    let refused = |got: Result<_, OneRosterError>| match got {
        Err(e) => e.key(),
        Ok(_) => "accepted",
    };
    // Garbage bytes for a zip.
    let junk = dir.path().join("junk.zip");
    std::fs::write(&junk, b"\x00\x01garbage").unwrap();
    assert_eq!(
        refused(
            or.import(Actor::Cli, Source::Zip(&junk), false, false)
                .await
        ),
        "oneroster-not-zip"
    );
    // No manifest.
    let feed = dir.path().join("feed");
    std::fs::create_dir(&feed).unwrap();
    write(&feed, "orgs.csv", "sourcedId,name,type\n");
    assert_eq!(
        refused(
            or.import(Actor::Cli, Source::Dir(&feed), false, false)
                .await
        ),
        "oneroster-no-manifest"
    );
    // A file the manifest promises is missing; a required column is missing.
    write(
        &feed,
        "manifest.csv",
        "propertyName,value\noneroster.version,1.2\nfile.orgs,bulk\nfile.classes,bulk\n",
    );
    assert_eq!(
        refused(
            or.import(Actor::Cli, Source::Dir(&feed), false, false)
                .await
        ),
        "oneroster-file-missing"
    );
    write(&feed, "classes.csv", "sourcedId,title\nk,x\n");
    assert_eq!(
        refused(
            or.import(Actor::Cli, Source::Dir(&feed), false, false)
                .await
        ),
        "oneroster-missing-column"
    );
    // Another version, and a delivery word nobody knows.
    write(
        &feed,
        "manifest.csv",
        "propertyName,value\noneroster.version,2.0\nfile.orgs,bulk\n",
    );
    assert_eq!(
        refused(
            or.import(Actor::Cli, Source::Dir(&feed), false, false)
                .await
        ),
        "oneroster-bad-version"
    );
    write(
        &feed,
        "manifest.csv",
        "propertyName,value\noneroster.version,1.2\nfile.orgs,sometimes\n",
    );
    assert_eq!(
        refused(
            or.import(Actor::Cli, Source::Dir(&feed), false, false)
                .await
        ),
        "oneroster-bad-manifest"
    );
}

/// A student is in one class a school year (a second is refused, the same one twice is one
/// placement); a class of next year takes its members from its first day.
async fn one_class_per_year_and_next_years_classes(t: TestDb) {
    let (class1, ids, _) = school_with_a_class(&t).await;
    let (nana, lei) = (ids[1], ids[2]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let y = SchoolYear::of_date(today()).0;
    write(
        d,
        "manifest.csv",
        "propertyName,value\noneroster.version,1.2\nfile.academicSessions,bulk\n\
        file.classes,bulk\nfile.enrollments,delta\n",
    );
    write(
        d,
        "academicSessions.csv",
        &format!(
            "sourcedId,title,type,startDate,endDate,schoolYear\n\
            now,{y},schoolYear,{y}-09-01,{}-08-31,{}\n\
            next,{},schoolYear,{}-09-01,{}-08-31,{}\n",
            y + 1,
            y + 1,
            y + 1,
            y + 1,
            y + 2,
            y + 2
        ),
    );
    write(
        d,
        "classes.csv",
        &format!(
            "sourcedId,title,grades,courseSourcedId,classType,schoolSourcedId,termSourcedIds\n\
            {class1},三(1)班,03,c,homeroom,{SCHOOL},now\n\
            k2,三(2)班,03,c,homeroom,{SCHOOL},now\n\
            k3,三(1)班,03,c,homeroom,{SCHOOL},next\n"
        ),
    );
    write(
        d,
        "enrollments.csv",
        &format!(
            "sourcedId,classSourcedId,schoolSourcedId,userSourcedId,role\n\
            e1,{class1},{SCHOOL},{lei},student\n\
            e2,k2,{SCHOOL},{lei},student\n\
            e3,k3,{SCHOOL},{nana},student\n\
            e4,{class1},{SCHOOL},{lei},student\n"
        ),
    );
    let report = OneRoster(&t.db)
        .import(Actor::Cli, Source::Dir(d), true, false)
        .await
        .unwrap();
    let got: Vec<(u64, &str)> = report.rejected.iter().map(|r| (r.line, r.key)).collect();
    assert_eq!(got, [(3, "oneroster-two-classes")]);
    assert_eq!((report.placed, report.classes_new), (2, 2));
    assert_eq!(members(&t, class1).await, ["李雷", "欧阳娜娜", "王小明"]);
    // Next year's class: 娜娜 is in it from 1 September, and still in 三(1)班 this year.
    let next = Classes(&t.db)
        .list(
            &Scope::everything(),
            SCHOOL,
            SchoolYear(y + 1),
            SchoolYear(y + 1).start(),
        )
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].members, 1);
}
