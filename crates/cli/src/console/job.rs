//! The console's replay job, as a small state machine.
//!
//! `Idle → Counting → Replaying → Done | Failed`, and from `Done` or
//! `Failed` a new job may start. The HTTP request that starts a job only
//! moves it to `Counting` and returns; a task of its own counts (the dry
//! run), replays and finishes it, so a dropped request (a closed tab)
//! cannot leave a job marked running. Each step names the job it belongs
//! to ([`Ticket`]): a late step of an earlier job changes nothing.

use serde::Serialize;

use crate::dlq::Summary;

/// The one job the console runs at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Job {
    #[default]
    Idle,
    /// The dry run counts what the replay will move.
    Counting {
        ticket: Ticket,
    },
    Replaying {
        ticket: Ticket,
        planned: u64,
        progress: Summary,
    },
    Done {
        planned: u64,
        summary: Summary,
    },
    Failed {
        planned: u64,
        progress: Summary,
        error: String,
    },
}

/// Which job a step is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// A job is already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Job {
    pub fn running(&self) -> bool {
        matches!(self, Self::Counting { .. } | Self::Replaying { .. })
    }

    fn ticket(&self) -> Option<Ticket> {
        match self {
            Self::Counting { ticket } | Self::Replaying { ticket, .. } => Some(*ticket),
            _ => None,
        }
    }

    /// Starts a job: `Counting`. `Busy` while one runs. `next` numbers it.
    pub fn start(&mut self, next: u64) -> Result<Ticket, Busy> {
        if self.running() {
            return Err(Busy);
        }
        let ticket = Ticket(next);
        *self = Self::Counting { ticket };
        Ok(ticket)
    }

    /// The dry run counted `planned`: `Replaying`.
    pub fn counted(&mut self, ticket: Ticket, planned: u64) {
        if matches!(self, Self::Counting { ticket: t } if *t == ticket) {
            *self = Self::Replaying {
                ticket,
                planned,
                progress: Summary::default(),
            };
        }
    }

    /// Progress of the replay.
    pub fn progressed(&mut self, ticket: Ticket, summary: Summary) {
        if let Self::Replaying {
            ticket: t,
            progress,
            ..
        } = self
        {
            if *t == ticket {
                *progress = summary;
            }
        }
    }

    /// The job ended: `Done` with its summary, or `Failed` with what the
    /// operator should read (from `Counting` too).
    pub fn finish(&mut self, ticket: Ticket, result: Result<Summary, String>) {
        if self.ticket() != Some(ticket) {
            return;
        }
        let (planned, progress) = match self {
            Self::Replaying {
                planned, progress, ..
            } => (*planned, *progress),
            _ => (0, Summary::default()),
        };
        *self = match result {
            Ok(summary) => Self::Done { planned, summary },
            Err(error) => Self::Failed {
                planned,
                progress,
                error,
            },
        };
    }

    /// What the page and `/replay/status` show.
    pub fn view(&self) -> JobView {
        let (planned, s, error) = match self {
            Self::Idle | Self::Counting { .. } => (0, Summary::default(), None),
            Self::Replaying {
                planned, progress, ..
            } => (*planned, *progress, None),
            Self::Done { planned, summary } => (*planned, *summary, None),
            Self::Failed {
                planned,
                progress,
                error,
            } => (*planned, *progress, Some(error.clone())),
        };
        JobView {
            started: !matches!(self, Self::Idle),
            running: self.running(),
            planned,
            replayed: s.replayed,
            skipped: s.skipped,
            failed: s.failed,
            error,
        }
    }
}

/// The job as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub started: bool,
    pub running: bool,
    pub planned: u64,
    pub replayed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub error: Option<String>,
}

impl JobView {
    /// The progress line under the bar.
    pub fn progress_text(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let state = if self.running { "replaying" } else { "done" };
        format!(
            "{state}: replayed {}, skipped {}, failed {}",
            self.replayed, self.skipped, self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(replayed: u64) -> Summary {
        Summary {
            replayed,
            skipped: 0,
            failed: 0,
        }
    }

    #[test]
    fn a_job_counts_replays_and_ends() {
        let mut job = Job::default();
        assert!(!job.view().started);
        let t = job.start(1).expect("idle");
        assert!(job.running());
        assert_eq!(job.start(2), Err(Busy), "one at a time");
        job.counted(t, 3);
        job.progressed(t, summary(2));
        let v = job.view();
        assert_eq!((v.running, v.planned, v.replayed), (true, 3, 2));
        assert_eq!(
            v.progress_text(),
            "replaying: replayed 2, skipped 0, failed 0"
        );
        job.finish(t, Ok(summary(3)));
        let v = job.view();
        assert_eq!((v.started, v.running, v.replayed), (true, false, 3));
        assert!(
            job.start(2).is_ok(),
            "a finished job makes way for the next"
        );
    }

    #[test]
    fn a_failure_in_any_running_state_ends_the_job() {
        let mut job = Job::default();
        let t = job.start(1).expect("idle");
        job.finish(t, Err("the queue did not answer".to_owned()));
        assert!(!job.running());
        assert_eq!(
            job.view().error.as_deref(),
            Some("the queue did not answer")
        );
        let t = job.start(2).expect("failed jobs make way");
        job.counted(t, 5);
        job.progressed(t, summary(1));
        job.finish(t, Err("stopped".to_owned()));
        let v = job.view();
        assert_eq!((v.running, v.planned, v.replayed), (false, 5, 1));
    }

    #[test]
    fn steps_of_an_earlier_job_change_nothing() {
        let mut job = Job::default();
        let old = job.start(1).expect("idle");
        job.finish(old, Ok(summary(0)));
        let new = job.start(2).expect("done");
        job.counted(old, 99);
        job.progressed(old, summary(99));
        job.finish(old, Err("late".to_owned()));
        assert_eq!(job, Job::Counting { ticket: new });
    }
}
