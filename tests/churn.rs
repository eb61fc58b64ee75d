//! Churn without leaks: participants join and leave every few hundred milliseconds; after a
//! warm-up baseline, the server's RSS, descriptors, threads, tasks and gauges must come back
//! to it. The same check, longer, is `scripts/churn-soak.sh`.

mod common;

use std::time::Duration;

use common::Server;
use roomcast_client::load::{LoadConfig, Scenario, churn_leak_check};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let server = Server::start_with(&["--workers", "1"]);
    let config = LoadConfig {
        server: server.url.clone(),
        scenario: Scenario::Churn {
            rooms: 2,
            size: 4,
            min_stay: Duration::from_millis(200),
            max_stay: Duration::from_millis(800),
        },
        duration: Duration::from_secs(25),
        video_bitrate_bps: 500_000,
        fps: 30,
        join_rate: 50.0,
        bind_ip: "127.0.0.1".parse().unwrap(),
        progress: false,
        simulcast: false,
        tile_width: None,
    };
    let (report, leaks) = churn_leak_check(config, Duration::from_secs(8))
        .await
        .unwrap();
    println!("{}\n{}", report.table(), leaks.table());
    assert!(
        report.joins >= 100,
        "only {} joins: the churn did not churn",
        report.joins
    );
    assert_eq!(report.join_failures, 0, "{:?}", report.errors);
    assert!(
        leaks.problems.is_empty(),
        "{}\nserver log:\n{}",
        leaks.table(),
        server.log_text()
    );
}
