//! The life of the per-cgroup series: each cgroup's container found while it runs, and its
//! series dropped some time after the cgroup is gone, freeing their room in the kernel's table.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use mmtrace_bpf::Tracer;

use crate::containers;

/// How often every counted cgroup is looked at, besides the kernel's news of new ones (news
/// can be lost to a full ring).
const LOOK_EVERY: Duration = Duration::from_secs(5);

pub struct Cgroups {
    forget_after: Duration,
    looked: Instant,
    /// The counted cgroups found gone, and since when.
    gone_since: HashMap<u64, Instant>,
    /// The cgroups left out of the scope when last said.
    left_out: u64,
}

impl Cgroups {
    pub fn new(forget_after: Duration) -> Cgroups {
        Cgroups {
            forget_after,
            looked: Instant::now(),
            gone_since: HashMap::new(),
            left_out: 0,
        }
    }

    /// Called when the ring holds news, and at the time the last call returned: the news of a
    /// new cgroup is read as soon as the kernel sends it, while the cgroup still names its
    /// container; one that ends within milliseconds of its first call may go unnamed.
    pub fn tick(&mut self, tracer: &mut Tracer) -> anyhow::Result<Instant> {
        for id in tracer.metrics_news() {
            containers::of_cgroup(id);
        }
        let every = LOOK_EVERY.min(self.forget_after.max(Duration::from_secs(1)));
        if self.looked.elapsed() >= every {
            self.looked = Instant::now();
            let counted = tracer.metrics_cgroups()?;
            // Cached after the first time: only cgroups whose news were lost cost a look.
            for &id in &counted {
                containers::of_cgroup(id);
            }
            self.forget_gone(tracer, &counted)?;
            let left_out = tracer.scope_overflow();
            if left_out > self.left_out {
                self.left_out = left_out;
                if let Some(warning) = containers::scope_overflow_warning(left_out) {
                    eprintln!("{warning}");
                }
            }
        }
        Ok(self.looked + every)
    }

    fn forget_gone(&mut self, tracer: &mut Tracer, counted: &BTreeSet<u64>) -> anyhow::Result<()> {
        let Some(live) = containers::live_cgroups() else {
            return Ok(());
        };
        let now = Instant::now();
        self.gone_since.retain(|id, _| counted.contains(id));
        for &id in counted.iter().filter(|id| !live.contains(id)) {
            self.gone_since.entry(id).or_insert(now);
        }
        let expired: BTreeSet<u64> = self
            .gone_since
            .iter()
            .filter(|&(_, &since)| now - since >= self.forget_after)
            .map(|(&id, _)| id)
            .collect();
        if !expired.is_empty() {
            tracer.metrics_forget(&expired)?;
            self.gone_since.retain(|id, _| !expired.contains(id));
        }
        Ok(())
    }
}
