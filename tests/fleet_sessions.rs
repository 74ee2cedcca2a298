//! The session table's scripts against a real redis-server: what several instances of a fleet
//! see of each other's sessions through the store, without a proxy in between (the timings a
//! proxy would need for these races are not in a test's hands).

mod support;

use std::sync::Arc;
use std::time::Duration;

use portcullis::config::StoreSettings;
use portcullis::fleet::{Board, Count, Placement, Refused, SessionTable};
use portcullis::log::Logger;
use portcullis::store::{Store, Words};
use support::redis::{key_prefix, redis_url};

/// An instance's table on the run's redis, under `prefix`.
fn table(prefix: &str) -> Arc<SessionTable> {
    let settings = StoreSettings {
        url: redis_url().to_string(),
        prefix: prefix.to_string(),
        secret: None,
        timeout_ms: 2_000,
        retry_ms: 2_000,
    };
    let words = Words {
        who: "Fleet store",
        without: "alone",
        again: "shared",
    };
    let logger = Arc::new(Logger::stderr("fleet-sessions-test"));
    let store = Store::from_settings(&settings, "fleet.store", words, logger).expect("store");
    SessionTable::new(Some(Arc::new(store)), Duration::from_secs(30))
}

fn placed(table: &SessionTable, host: &str) -> (Vec<Count>, Option<Placement>) {
    let sessions_key = table.key_for("pool:s", &["kate"]);
    let placement = Placement {
        pool: 1,
        host: host.into(),
        sessions_key: sessions_key.clone(),
        assignment_key: table.key_for("pool:a", &["kate"]),
        sticky: Duration::from_secs(60),
    };
    let counts = vec![
        Count {
            key: table.key_for("cap:imap:u", &["kate"]),
            cap: 2,
        },
        Count {
            key: sessions_key,
            cap: 0,
        },
    ];
    (counts, Some(placement))
}

/// A cap counts the sessions of every instance: two instances, a cap of 2, the third session
/// is refused whichever instance it comes through; one ending makes room on the other.
#[tokio::test]
async fn a_cap_counts_every_instances_sessions() {
    let prefix = key_prefix();
    let (a, b) = (table(&prefix), table(&prefix));
    let (counts, placement) = placed(&a, "10.0.0.11");
    let first = a.enter(&counts, placement.clone()).await.expect("first");
    let _second = b.enter(&counts, placement.clone()).await.expect("second");
    let third = a.enter(&counts, placement.clone()).await;
    assert_eq!(third.err(), Some(Refused::AtCap(0)));
    drop(first);
    // The leaving is sent to the store in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match b.enter(&counts, placement.clone()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() > deadline => panic!("still refused: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A login placed on one server while the admin moved the user to another (the move came
/// between the placement and the login's end) is not kept, on any instance; a login for the
/// new server is.
#[tokio::test]
async fn a_login_during_which_the_user_was_moved_is_not_kept() {
    let prefix = key_prefix();
    let (a, b) = (table(&prefix), table(&prefix));
    let (counts, old) = placed(&a, "10.0.0.11");
    let (_, new) = placed(&a, "10.0.0.12");
    let board = Board::new(b.clone());
    let (sessions_key, assignment_key) = {
        let p = old.as_ref().unwrap();
        (p.sessions_key.clone(), p.assignment_key.clone())
    };
    board
        .move_user(
            &sessions_key,
            &assignment_key,
            "10.0.0.12",
            Duration::from_secs(60),
        )
        .await
        .expect("the store took the move");
    assert_eq!(a.enter(&counts, old).await.err(), Some(Refused::Moved));
    assert!(a.enter(&counts, new).await.is_ok());
}
