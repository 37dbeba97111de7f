//! A project's limits (its `projects:` entry in fleet.yaml, else the pipeline's defaults) and
//! the hard limits of money and time per epic: what its agents spent and how long its stages
//! worked, checked before each stage (`fleet_core::budget`).

use crate::{Pipeline, Result};
use fleet_core::budget::{EpicBudget, Spent, over_limit};
use fleet_core::epic::Limits;
use fleet_store::EpicRow;

impl Pipeline {
    /// The loop limits of `project`'s epics.
    pub fn limits_of(&self, project: &str) -> Limits {
        match self.instance.projects.get(project) {
            Some(l) => Limits {
                max_cycles: l.max_cycles,
                max_replans: l.max_replans,
                max_rearchitects: l.max_rearchitects,
            },
            None => self.limits,
        }
    }

    /// Tasks of one of `project`'s stage runs that run at once.
    pub fn concurrency_of(&self, project: &str) -> usize {
        self.instance
            .projects
            .get(project)
            .map_or(self.concurrency, |l| l.concurrency)
    }

    fn budget_of(&self, project: &str) -> EpicBudget {
        let l = self.instance.project_limits(project);
        EpicBudget {
            max_usd: l.budget_usd,
            max_tokens: l.budget_tokens,
            max_time_ms: l.max_time.map(|t| t.as_millis() as u64),
        }
    }

    /// Why `epic` must end now (a hard limit of its project is reached), or `None`.
    pub(crate) fn hard_limit(&self, epic: &EpicRow) -> Result<Option<String>> {
        let budget = self.budget_of(&epic.project);
        if budget == EpicBudget::default() {
            return Ok(None);
        }
        Ok(over_limit(&self.spent(epic)?, &budget))
    }

    /// What the epic's stage runs' attempts cost, and how long its stages worked.
    pub fn spent(&self, epic: &EpicRow) -> Result<Spent> {
        let mut spent = Spent::default();
        // Stage runs are named `<epic>-<stage>-…`; the dash keeps e1 from matching e10.
        for run in self.store.runs_named(&format!("{}-", epic.id))? {
            for a in self.store.attempts(&run.id)? {
                spent.usd += a.cost_usd;
                spent.tokens +=
                    a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_write_tokens;
            }
        }
        let now = fleet_engine::now_ms();
        spent.time_ms = epic
            .stages
            .iter()
            .map(|s| (s.finished_at.unwrap_or(now) - s.started_at).max(0) as u64)
            .sum();
        Ok(spent)
    }
}
