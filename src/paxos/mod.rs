//! The pure Paxos core: no IO, no clock, no randomness, no async.
//!
//! One register (key) is one single-decree Paxos instance:
//! - [`acceptor::handle`] applies a [`Request`] to an [`AcceptorState`];
//! - [`Round`] drives one proposer round (phase 1, then phase 2), or a fast
//!   round (phase 2 alone in [`Ballot::FAST`], chosen only with every vote);
//! - [`ReadRound`] is a quorum read that decides whether a value is chosen;
//! - [`Coordinator`] runs one client request across all its rounds (fast
//!   attempt, classic rounds with backoff, quorum read and recovery) as a
//!   state machine of effects: `src/node.rs` executes it, and the model
//!   checker drives the same code;
//! - [`BallotClock`] hands out ballots a node never reuses;
//! - [`rejoin`]: the incarnation fence and the rebuild rule for a node that
//!   lost its disk.
//!
//! ```
//! use paxos_kv::paxos::{acceptor, AcceptorState, Ballot, Members, Progress, Reply, Round, Step};
//!
//! let members = Members::new([1, 2, 3]);
//! let mut acceptors = vec![AcceptorState::<&str>::default(); 3];
//! let (mut round, prepare) = Round::start(Ballot::new(1, 1), members, Some("blue"));
//! let mut outcome = Progress::Wait;
//! let mut request = prepare;
//! // Deliver each request to every acceptor, persisting before replying.
//! for _phase in 0..2 {
//!     for (i, state) in acceptors.iter_mut().enumerate() {
//!         let reply = match acceptor::handle(state, request.clone()) {
//!             Step::Reply(reply) => reply,
//!             Step::Persist(p) => {
//!                 let (new_state, reply) = p.reply_once_durable();
//!                 *state = new_state;
//!                 reply
//!             }
//!         };
//!         match round.on_reply(i as u32 + 1, reply) {
//!             Progress::Send(next) => request = next,
//!             Progress::Wait => {}
//!             done => outcome = done,
//!         }
//!     }
//! }
//! assert_eq!(outcome, Progress::Chosen { ballot: Ballot::new(1, 1), value: "blue", proposed: true });
//! ```

pub mod acceptor;
pub mod ballot;
pub mod coordinator;
pub mod messages;
pub mod proposer;
pub mod quorum;
pub mod read;
pub mod rejoin;

pub use acceptor::{AcceptorState, Persist, Step};
pub use ballot::{Ballot, BallotClock, NextBallot, NodeId};
pub use coordinator::{Coordinator, Count, Effect, Fault, Limits, Outcome, Time};
pub use messages::{Accepted, Reply, Request};
pub use proposer::{Progress, Round};
pub use quorum::Members;
pub use read::{ReadProgress, ReadRound};
pub use rejoin::{rebuilt_vote, Fence, Incarnation, Known, FIRST_INCARNATION};
