//! core/v1 Events for what the controllers do (`kubectl describe` shows them). Written in
//! the background: a lost Event is logged, never retried, and never fails a reconcile.

pub(crate) use flotilla_client::{EventRecorder as Recorder, EventSeverity};
