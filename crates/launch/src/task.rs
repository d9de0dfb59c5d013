//! A task's states and the only ways between them.
//!
//! A task is created in [`INITIAL`] and moves only along [`TRANSITIONS`]; the engine applies a
//! state change nowhere else (`Engine::update` with `Step::To`), and refuses one the table does
//! not list. The final states (`exited`, `failed`, `cancelled`) lead nowhere.

use vouch_api::TaskState::{self, *};

/// The state a task is created in: its image is being checked.
pub(crate) const INITIAL: TaskState = Verifying;

/// From each state, the states a task may go to next.
///
/// - the launch: verifying -> verified -> creating -> created -> starting -> running;
/// - before the container runs, a launch may fail or be cancelled at every step;
/// - a started container ends as exited (its status recorded, or unknown); `created` -> `exited`
///   is for a restart that finds the monitor's exit record of a launch it did not see start;
/// - a running container is never "cancelled" (that is a stop, and it ends as exited); it fails
///   only if its monitor reports a failure after the start.
pub(crate) const TRANSITIONS: &[(TaskState, &[TaskState])] = &[
    (Pulling, &[Pulled, Failed, Cancelled]),
    (Pulled, &[Verifying, Failed, Cancelled]),
    (Verifying, &[Verified, Failed, Cancelled]),
    (Verified, &[Creating, Failed, Cancelled]),
    (Creating, &[Created, Failed, Cancelled]),
    (Created, &[Starting, Exited, Failed, Cancelled]),
    (Starting, &[Running, Exited, Failed, Cancelled]),
    (Running, &[Exited, Failed]),
    (Exited, &[]),
    (Failed, &[]),
    (Cancelled, &[]),
];

/// The states `from` may go to.
pub fn next(from: TaskState) -> &'static [TaskState] {
    TRANSITIONS
        .iter()
        .find(|(s, _)| *s == from)
        .map(|(_, to)| *to)
        .unwrap_or(&[])
}

/// Whether a task in `from` may go to `to`.
pub fn allowed(from: TaskState, to: TaskState) -> bool {
    next(from).contains(&to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_one_row_and_final_states_lead_nowhere() {
        for s in TaskState::ALL {
            assert_eq!(
                TRANSITIONS.iter().filter(|(f, _)| *f == s).count(),
                1,
                "{s:?} must have exactly one row"
            );
            assert_eq!(s.is_final(), next(s).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn the_launch_path_is_allowed_and_nothing_goes_back() {
        let path = [
            Verifying, Verified, Creating, Created, Starting, Running, Exited,
        ];
        assert_eq!(INITIAL, path[0]);
        for w in path.windows(2) {
            assert!(allowed(w[0], w[1]), "{:?} -> {:?}", w[0], w[1]);
            assert!(!allowed(w[1], w[0]), "{:?} -> {:?}", w[1], w[0]);
        }
        let order = |s: TaskState| TaskState::ALL.iter().position(|x| *x == s);
        for (from, to) in TRANSITIONS {
            for t in *to {
                assert!(order(*t) > order(*from), "{from:?} -> {t:?} goes back");
            }
        }
    }

    #[test]
    fn refusals() {
        assert!(
            !allowed(Running, Cancelled),
            "a running container is stopped, not cancelled"
        );
        assert!(!allowed(Exited, Running));
        assert!(!allowed(Failed, Exited));
        assert!(!allowed(Cancelled, Failed));
        assert!(
            !allowed(Verifying, Running),
            "no step is skipped to the start"
        );
        assert!(!allowed(Verified, Created), "the bundle is not skipped");
        for s in TaskState::ALL
            .into_iter()
            .filter(|s| !s.is_final() && *s != Running)
        {
            assert!(allowed(s, Failed) && allowed(s, Cancelled), "{s:?}");
        }
    }
}
