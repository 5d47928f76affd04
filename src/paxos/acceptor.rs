//! The acceptor rules, as a pure function of (state, request).
//!
//! [`handle`] never does IO. When a request changes the state it returns
//! [`Step::Persist`]: the reply inside can only be taken out with
//! [`Persist::reply_once_durable`], which the driver calls after the new state
//! is on disk (docs/design.md invariant 1: durable before the reply leaves).

use super::ballot::Ballot;
use super::messages::{Accepted, Reply, Request};

/// Everything an acceptor must remember about one register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AcceptorState<V> {
    /// The highest ballot promised; requests below it are rejected.
    pub promised: Ballot,
    /// The vote with the highest ballot this acceptor cast.
    pub accepted: Option<Accepted<V>>,
    /// `accepted` is known to be chosen: the register is immutable.
    pub decided: bool,
}

impl<V> Default for AcceptorState<V> {
    fn default() -> Self {
        AcceptorState {
            promised: Ballot::ZERO,
            accepted: None,
            decided: false,
        }
    }
}

impl<V> AcceptorState<V> {
    /// The chosen value, when this acceptor knows it.
    pub fn decided_value(&self) -> Option<&Accepted<V>> {
        if self.decided {
            self.accepted.as_ref()
        } else {
            None
        }
    }
}

/// What the driver must do with a request's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Step<V> {
    /// The state is unchanged: send the reply now.
    Reply(Reply<V>),
    /// The state changed: make [`Persist::state`] durable, then send
    /// [`Persist::reply_once_durable`].
    Persist(Persist<V>),
}

/// A new state and the reply that may leave only once that state is durable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use = "the new state must be persisted and the reply sent"]
pub struct Persist<V> {
    state: AcceptorState<V>,
    reply: Reply<V>,
}

impl<V> Persist<V> {
    /// The state to make durable.
    pub fn state(&self) -> &AcceptorState<V> {
        &self.state
    }

    /// The reply. Call only after [`Persist::state`] is durable: sending it
    /// earlier breaks the promise a crash would forget.
    pub fn reply_once_durable(self) -> (AcceptorState<V>, Reply<V>) {
        (self.state, self.reply)
    }
}

/// [`handle`] in a membership epoch: while the fast ballot is closed (a
/// transitional epoch: `fast_open` is
/// [`Members::fast_allowed`](super::quorum::Members::fast_allowed)), an accept
/// in it is refused like one for another fast value, so no fast vote is
/// cast that the sweep of the change would not see.
pub fn handle_in<V: Clone + PartialEq>(
    state: &AcceptorState<V>,
    request: Request<V>,
    fast_open: bool,
) -> Step<V> {
    if !fast_open
        && state.decided_value().is_none()
        && matches!(request, Request::Accept { ballot, .. } if ballot == Ballot::FAST)
    {
        return Step::Reply(Reply::Rejected {
            ballot: Ballot::FAST,
            promised: state.promised,
        });
    }
    handle(state, request)
}

/// Applies one request to an acceptor's state (Paxos Made Simple, section 2.2,
/// plus a decided flag):
/// - `Prepare(b)`: promise iff `b > promised`, reporting the vote cast before.
/// - `Accept(b, v)`: accept iff `b >= promised`; in the fast ballot
///   ([`Ballot::FAST`]) only while nothing is promised and no other value has
///   this acceptor's fast vote (one fast vote per acceptor, ever).
/// - `Read`: report the vote; never changes state.
/// - `Decide(b, v)`: record `v` as chosen; a decided register never changes.
///
/// A decided acceptor answers every request with [`Reply::Decided`].
pub fn handle<V: Clone + PartialEq>(state: &AcceptorState<V>, request: Request<V>) -> Step<V> {
    if let Some(chosen) = state.decided_value() {
        // Invariant 5: a decided register is immutable; whoever asks learns the value.
        return Step::Reply(Reply::Decided {
            ballot: chosen.ballot,
            value: chosen.value.clone(),
        });
    }
    match request {
        Request::Prepare { ballot } => {
            if ballot > state.promised {
                let state = AcceptorState {
                    promised: ballot,
                    accepted: state.accepted.clone(),
                    decided: false,
                };
                let reply = Reply::Promise {
                    ballot,
                    accepted: state.accepted.clone(),
                };
                Step::Persist(Persist { state, reply })
            } else {
                Step::Reply(Reply::Rejected {
                    ballot,
                    promised: state.promised,
                })
            }
        }
        Request::Accept { ballot, value } => {
            if ballot < state.promised {
                return Step::Reply(Reply::Rejected {
                    ballot,
                    promised: state.promised,
                });
            }
            let vote = Accepted { ballot, value };
            if ballot == state.promised && state.accepted.as_ref() == Some(&vote) {
                // A duplicate of a vote already durable: answer again, write nothing.
                return Step::Reply(Reply::Accepted { ballot });
            }
            if ballot == Ballot::FAST && state.accepted.is_some() {
                // The fast ballot is the only one that can carry two values;
                // this acceptor's single fast vote is already cast.
                return Step::Reply(Reply::Rejected {
                    ballot,
                    promised: state.promised,
                });
            }
            Step::Persist(Persist {
                state: AcceptorState {
                    promised: ballot,
                    accepted: Some(vote),
                    decided: false,
                },
                reply: Reply::Accepted { ballot },
            })
        }
        Request::Read => Step::Reply(Reply::Vote {
            accepted: state.accepted.clone(),
        }),
        Request::Decide { ballot, value } => Step::Persist(Persist {
            state: AcceptorState {
                promised: state.promised.max(ballot),
                accepted: Some(Accepted { ballot, value }),
                decided: true,
            },
            reply: Reply::Ack,
        }),
    }
}
