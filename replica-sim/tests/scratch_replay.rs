use replica_sim::params::NetParams;
use replica_sim::{heal_and_check, FaultMode, KvWorkload, Params, World};

#[test]
#[ignore]
fn replay() {
    let seed = 3069324072295491801u64;
    let mut p = Params::draw(seed, FaultMode::CrashStop);
    p.replicas = 3;
    p.full_mesh_seeds = true;
    let mut world = World::new(
        p.clone(),
        KvWorkload::new(p.work.keys, p.work.read_ratio, p.work.put_ratio),
        true,
    );
    world.start(false);
    world.run_until(200);
    enum S {
        Run(u64),
        Crash(usize),
        Restart(usize),
        Pause(usize, u64),
        Stall(usize, u64),
        Net(u8, u64),
    }
    use S::*;
    let steps = [
        Run(599),
        Run(201),
        Run(119),
        Pause(1, 109),
        Net(20, 9),
        Run(492),
        Run(272),
        Crash(0),
        Run(240),
        Restart(0),
        Run(401),
        Stall(2, 185),
        Run(259),
        Run(350),
        Pause(0, 125),
        Crash(2),
        Run(545),
        Restart(2),
        Crash(1),
    ];
    for s in steps {
        match s {
            Run(ms) => {
                let t = world.now() + ms;
                world.run_until(t);
            }
            Crash(r) => world.crash_replica(r),
            Restart(r) => world.restart_replica(r),
            Pause(r, ms) => world.pause_replica(r, ms.min(p.config.failure_timeout_ms / 3)),
            Stall(r, ms) => world.stall_disk(r, ms.min(p.config.ack_timeout_ms / 2)),
            Net(dup, delay) => {
                let mut net = NetParams::reliable(p.net.call_timeout_ms.max(2 * delay + 10));
                net.duplicate = f64::from(dup) / 100.0;
                net.delay_max_ms = delay.max(net.delay_min_ms);
                world.set_network(net);
            }
        }
    }
    heal_and_check(&mut world);
    let text = world.trace.take_text().unwrap_or_default();
    std::fs::write("/tmp/replay-trace.txt", text).unwrap();
    for v in &world.checker.violations {
        println!("VIOLATION {v}");
    }
}
