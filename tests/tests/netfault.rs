//! The network partition primitive ([`cairn_tests::netfault`]): brokers running as distinct
//! uids, cut off from their peers by per-uid nftables rules on 127.0.0.1, while the test (root)
//! still reaches them. A cut broker's peers lose it (the controller fences it, over connections
//! that were established before the cut), and a heal brings it back.

use anyhow::Result;
use cairn_tests::cluster::{CLUSTER_WAIT, ClusterOptions};
use cairn_tests::netfault::NetFaults;
use cairn_tests::{TestCluster, wait_for};

/// Fast failure detection, so a cut broker is fenced within seconds.
const CONFIG: &str = "\
[cluster]
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000
";

fn cluster() -> Result<TestCluster> {
    let options = ClusterOptions {
        distinct_uids: true,
        log_dir: None,
    };
    TestCluster::start_with_options(3, Some(CONFIG), &options)
}

/// Whether broker `via`'s view lists `id` as alive, with `via` the controller.
async fn controller_sees(cluster: &TestCluster, via: u32, id: u32) -> Option<bool> {
    let answer = cluster.describe_cluster(via).await.ok()?;
    if answer.controller_id != via {
        return None;
    }
    answer.brokers.iter().find(|b| b.id == id).map(|b| b.alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_broker_is_fenced_by_its_peers_yet_reachable_by_clients() -> Result<()> {
    let cluster = cluster()?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let controller = cluster.wait_controller(None).await?;
    let victim = cluster
        .ids()
        .find(|&id| id != controller)
        .expect("3 brokers");
    let faults = NetFaults::new()?;

    cluster.isolate(&faults, victim)?;
    wait_for(
        "the controller to fence the cut broker",
        CLUSTER_WAIT,
        || async {
            (controller_sees(&cluster, controller, victim).await == Some(false)).then_some(())
        },
    )
    .await?;
    // The runner (root) is matched by no rule: the cut broker still answers it.
    let answer = cluster.describe_cluster(victim).await?;
    assert!(!answer.brokers.is_empty(), "the cut broker answers clients");

    faults.heal()?;
    wait_for("the healed broker to come back", CLUSTER_WAIT, || async {
        (controller_sees(&cluster, controller, victim).await == Some(true)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_controller_is_replaced_and_the_rules_go_with_the_table() -> Result<()> {
    let cluster = cluster()?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let controller = cluster.wait_controller(None).await?;
    let faults = NetFaults::new()?;
    let table = faults.table().to_owned();

    cluster.isolate(&faults, controller)?;
    let others: Vec<u32> = cluster.ids().filter(|&id| id != controller).collect();
    wait_for(
        "the majority to elect another controller",
        CLUSTER_WAIT,
        || async {
            let a = cluster.describe_cluster(others[0]).await.ok()?;
            let b = cluster.describe_cluster(others[1]).await.ok()?;
            let new = a.controller_id;
            (new != 0 && new != controller && b.controller_id == new).then_some(())
        },
    )
    .await?;

    drop(faults);
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()?;
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains(&table),
        "dropping NetFaults deletes {table}"
    );
    // Healed: the old controller hears the new one again.
    cluster.wait_controller(None).await?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    Ok(())
}
