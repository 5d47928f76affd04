//! An exact linearizability checker for histories of write-once registers
//! (docs/api.md guarantee 4), without search.
//!
//! # The model
//!
//! Each key is a register that starts empty and can be written once. A
//! history is a list of [`Op`]s, each with the key, what the client asked
//! ([`Call`]), what it got back ([`Ret`]), and when it was invoked and when the
//! answer arrived. Times are any totally ordered type: an operation `a`
//! *precedes* `b` in real time when `a.completed < b.invoked` (strictly:
//! equal times count as concurrent, so coarse clocks stay sound; a counter
//! bumped at every recorded event gives the sharpest check).
//!
//! The sequential specification, per register, with state `None` or `Some(x)`:
//! - `PUT v -> Created`: the state was `None`; it becomes `Some(v)`.
//! - `PUT v -> AlreadyChosen`: the state was `Some(v)`.
//! - `PUT v -> Conflict(c)`: the state was `Some(c)` with `c != v`.
//! - `GET -> Found(x)`: the state is `Some(x)`; `GET -> NotFound`: it is `None`.
//! - `Unknown` (503, timeout, coordinator crashed, client gave up): the
//!   operation may or may not have taken effect, at any time after its
//!   invocation. It is either left out of the linearization or placed
//!   anywhere after its invocation (its completion counts as infinity).
//!   Only an unknown PUT can matter: as the write that filled the register.
//!
//! The history is linearizable iff there is a total order of all definite
//! operations plus some of the unknown ones that respects real-time precedence
//! and in which every operation returns what the specification says.
//!
//! # The rules (checked per key)
//!
//! Call an operation an *observer of x* when it is definite and its answer
//! shows the register holding `x`: `Found(x)`, `Conflict(x)`, and
//! `AlreadyChosen` / `Created` of a PUT of `x`. Call a definite `NotFound` GET
//! an *empty read*.
//!
//! 1. Well-formed: a PUT gets a PUT answer, a GET a GET answer; a definite
//!    answer has a completion time not before its invocation; a PUT of `v`
//!    never gets `Conflict(v)` (no state allows it).
//! 2. One value: all observers observe the same value `v`.
//! 3. One creation: at most one PUT is `Created`.
//! 4. A writer: if some value `v` is observed, the writer `W` is the `Created`
//!    PUT if there is one; otherwise it must be an `Unknown` PUT of `v` (the
//!    value came from some client), and we take the one invoked first.
//! 5. Real time: with `L` = the latest invocation among `W` and all empty
//!    reads, and `R` = the earliest completion among `W` (infinity if unknown)
//!    and all other observers, `L <= R`.
//!
//! If no value is observed, rules 1 to 3 suffice: every definite operation is
//! an empty read (a `Created` or `AlreadyChosen` PUT would observe its value),
//! and the empty reads in invocation order are a linearization.
//!
//! # Why the rules are exact
//!
//! *Sufficient.* Suppose they hold, with writer `W`. Give each operation a
//! point in time: an empty read its invocation, `W` the time `L`, an observer
//! `max(invoked, L)`; leave every other unknown operation out. Every point
//! lies in its operation's interval: empty reads trivially, `W` because
//! `inv(W) <= L <= R <= end(W)`, an observer because `L <= R <= end(O)`.
//! Order by point, breaking ties as empty reads, then `W`, then observers.
//! If `a` precedes `b` in real time, `point(a) <= end(a) < inv(b) <= point(b)`,
//! so the order respects real time. In it every empty read comes before `W`
//! (point `<= L`, tie broken before `W`) and sees `None`; `W` sees `None` and
//! writes `v`; every observer comes after `W` and sees `Some(v)`, which is
//! what it observed (rule 2); no other operation writes (rule 3, and unknown
//! PUTs other than `W` are left out). So the order is a linearization.
//!
//! *Necessary.* Rule 1 is the specification itself. In any linearization
//! the state is `None` until one write and `Some(v)` forever after, so
//! every observer sees the same `v` (rule 2) and only one PUT finds the
//! register empty (rule 3). The write is a `Created` PUT, or, with none, an
//! unknown PUT of `v`: `AlreadyChosen`, `Conflict` and GETs do not write
//! (rule 4). Empty reads are ordered before the write, observers after it.
//! If `L > R`, one of these holds and each contradicts the order: an empty
//! read invoked after `W` completed (it must follow `W`); an empty read
//! invoked after an observer completed (it must follow the observer, which
//! follows `W`); `W` invoked after an observer completed (the observer must
//! precede `W`). Choosing the earliest-invoked unknown PUT of `v` as the
//! writer minimizes `L` and leaves `R` at the other observers' minimum, so if
//! it fails every candidate fails.
//!
//! [`check`] returns a witness [`Linearization`] or the first broken rule as a
//! [`Violation`]; [`replay`] validates any proposed linearization directly
//! against the specification (the unit tests use it, together with a
//! brute-force search, to test the rules above).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};

/// What a client asked of a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call<V> {
    /// Write `V` once.
    Put(V),
    /// Read.
    Get,
}

/// What the client got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret<V> {
    /// PUT: the register was empty; this PUT's value is now chosen (201).
    Created,
    /// PUT: the register already held this PUT's value (200).
    AlreadyChosen,
    /// PUT: the register holds this other value (409).
    Conflict(V),
    /// GET: the register holds this value (200).
    Found(V),
    /// GET: the register is empty (404).
    NotFound,
    /// Any failure (503, timeout, crash): may or may not have taken effect.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<V, T> {
    /// The register.
    pub key: String,
    /// Who issued it (for display only).
    pub process: usize,
    /// The request.
    pub call: Call<V>,
    /// The answer.
    pub ret: Ret<V>,
    /// When the request was sent.
    pub invoked: T,
    /// When the answer arrived; `None` if it never did. Ignored for
    /// [`Ret::Unknown`], whose completion counts as infinity.
    pub completed: Option<T>,
}

impl<V, T> Op<V, T> {
    fn is_definite(&self) -> bool {
        !matches!(self.ret, Ret::Unknown)
    }
}

/// A completion time where an unknown outcome counts as infinitely late.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End<T> {
    At(T),
    Never,
}

fn end<V: PartialEq, T: Copy>(op: &Op<V, T>) -> End<T> {
    match (&op.ret, op.completed) {
        (Ret::Unknown, _) | (_, None) => End::Never,
        (_, Some(t)) => End::At(t),
    }
}

/// A total order of (some of) the operations of one register that the
/// specification accepts, as indices into the checked history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linearization<V> {
    /// Operation indices in linearization order; unknown operations that are
    /// left out do not appear.
    pub order: Vec<usize>,
    /// The write that filled the register and its value, if any was observed.
    pub write: Option<(usize, V)>,
}

/// Why a history is not linearizable (indices into the checked history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation<V> {
    /// Rule 1: an answer no state allows, or a definite answer without a
    /// proper completion time.
    Malformed {
        /// The operation.
        op: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Rule 2: two operations observed different values.
    TwoValues {
        /// The first observer of `first_value`.
        first: usize,
        /// What it observed.
        first_value: V,
        /// An observer of something else.
        second: usize,
        /// What that one observed.
        second_value: V,
    },
    /// Rule 3: two PUTs were both told they created the value.
    TwoCreated {
        /// One `Created` PUT.
        first: usize,
        /// Another.
        second: usize,
    },
    /// Rule 4: a value was observed that no PUT could have written.
    NoWriter {
        /// The observed value.
        value: V,
        /// An operation that observed it.
        observer: usize,
    },
    /// Rule 5: `later` was invoked after `earlier` completed, yet the
    /// specification needs `later` linearized before `earlier`.
    RealTime {
        /// The operation that completed first.
        earlier: usize,
        /// The operation invoked after it.
        later: usize,
        /// Which order the specification needed.
        why: &'static str,
    },
}

impl<V: Debug> fmt::Display for Violation<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed { op, why } => write!(f, "op #{op} is malformed: {why}"),
            Violation::TwoValues {
                first,
                first_value,
                second,
                second_value,
            } => write!(
                f,
                "two values chosen: op #{first} observed {first_value:?}, \
                 op #{second} observed {second_value:?}"
            ),
            Violation::TwoCreated { first, second } => {
                write!(
                    f,
                    "two PUTs were told 'created': op #{first} and op #{second}"
                )
            }
            Violation::NoWriter { value, observer } => write!(
                f,
                "op #{observer} observed {value:?}, which no created or unknown PUT wrote"
            ),
            Violation::RealTime {
                earlier,
                later,
                why,
            } => write!(
                f,
                "real-time order broken: op #{later} was invoked after op #{earlier} \
                 completed, but {why}"
            ),
        }
    }
}

/// Checks one register: all of `ops` must have the same key (not checked).
/// Returns a linearization, or the first rule of the module docs it breaks.
pub fn check<V, T>(ops: &[Op<V, T>]) -> Result<Linearization<V>, Violation<V>>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    let all: Vec<usize> = (0..ops.len()).collect();
    check_subset(ops, &all)
}

/// Checks every key of a history separately (registers are independent).
/// Indices in the answers are indices into `ops`.
pub fn check_per_key<V, T>(
    ops: &[Op<V, T>],
) -> Result<BTreeMap<String, Linearization<V>>, (String, Violation<V>)>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(i);
    }
    let mut out = BTreeMap::new();
    for (key, indices) in by_key {
        let lin = check_subset(ops, &indices).map_err(|v| (key.to_owned(), v))?;
        out.insert(key.to_owned(), lin);
    }
    Ok(out)
}

/// The value an operation observed, if it is an observer.
fn observed<V: Clone, T>(op: &Op<V, T>) -> Option<V> {
    match (&op.call, &op.ret) {
        (Call::Put(v), Ret::Created | Ret::AlreadyChosen) => Some(v.clone()),
        (Call::Put(_), Ret::Conflict(c)) => Some(c.clone()),
        (Call::Get, Ret::Found(x)) => Some(x.clone()),
        _ => None,
    }
}

fn check_subset<V, T>(ops: &[Op<V, T>], indices: &[usize]) -> Result<Linearization<V>, Violation<V>>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    // Rule 1.
    for &i in indices {
        let op = &ops[i];
        let why = match (&op.call, &op.ret) {
            (Call::Put(_), Ret::Found(_) | Ret::NotFound) => Some("a PUT got a GET answer"),
            (Call::Get, Ret::Created | Ret::AlreadyChosen | Ret::Conflict(_)) => {
                Some("a GET got a PUT answer")
            }
            (Call::Put(v), Ret::Conflict(c)) if v == c => {
                Some("a PUT was told its own value conflicts")
            }
            _ => None,
        };
        let why = why.or(match (op.is_definite(), op.completed) {
            (true, None) => Some("a definite answer without a completion time"),
            (true, Some(t)) if t < op.invoked => Some("completed before it was invoked"),
            _ => None,
        });
        if let Some(why) = why {
            return Err(Violation::Malformed { op: i, why });
        }
    }
    // Rule 2.
    let mut chosen: Option<(usize, V)> = None;
    for &i in indices {
        let Some(x) = observed(&ops[i]) else { continue };
        match &chosen {
            None => chosen = Some((i, x)),
            Some((first, v)) if *v != x => {
                return Err(Violation::TwoValues {
                    first: *first,
                    first_value: v.clone(),
                    second: i,
                    second_value: x,
                })
            }
            Some(_) => {}
        }
    }
    // Rule 3.
    let created: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| ops[i].ret == Ret::Created)
        .collect();
    if let [first, second, ..] = created[..] {
        return Err(Violation::TwoCreated { first, second });
    }
    let mut empty_reads: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| ops[i].call == Call::Get && ops[i].ret == Ret::NotFound)
        .collect();
    empty_reads.sort_by_key(|&i| (ops[i].invoked, i));
    let Some((first_observer, value)) = chosen else {
        return Ok(Linearization {
            order: empty_reads,
            write: None,
        });
    };
    // Rule 4.
    let writer = match created.first() {
        Some(&w) => w,
        None => indices
            .iter()
            .copied()
            .filter(|&i| ops[i].ret == Ret::Unknown && ops[i].call == Call::Put(value.clone()))
            .min_by_key(|&i| (ops[i].invoked, i))
            .ok_or(Violation::NoWriter {
                value: value.clone(),
                observer: first_observer,
            })?,
    };
    let observers: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| i != writer && observed(&ops[i]).is_some())
        .collect();
    // Rule 5. `l` is the latest invocation that must precede the write point,
    // `r` the earliest completion that must follow it.
    let (l_op, l) = empty_reads
        .iter()
        .map(|&g| (g, ops[g].invoked))
        .chain([(writer, ops[writer].invoked)])
        .max_by_key(|&(i, t)| (t, i == writer))
        .expect("the writer is there");
    let (r_op, r) = observers
        .iter()
        .map(|&o| (o, end(&ops[o])))
        .chain([(writer, end(&ops[writer]))])
        .min_by_key(|&(i, t)| (t, i != writer))
        .expect("the writer is there");
    if End::At(l) > r {
        let why = if l_op == writer {
            "it observed the value before the only possible writer was invoked"
        } else if r_op == writer {
            "it read an empty register after the write that filled it had completed"
        } else {
            "it read an empty register after another operation had observed the value"
        };
        let (earlier, later) = (r_op, l_op);
        return Err(Violation::RealTime {
            earlier,
            later,
            why,
        });
    }
    // The witness of the sufficiency argument.
    let mut points: Vec<(T, u8, usize)> = empty_reads
        .iter()
        .map(|&g| (ops[g].invoked, 0, g))
        .collect();
    points.push((l, 1, writer));
    points.extend(observers.iter().map(|&o| (ops[o].invoked.max(l), 2, o)));
    points.sort();
    Ok(Linearization {
        order: points.into_iter().map(|(_, _, i)| i).collect(),
        write: Some((writer, value)),
    })
}

/// Validates a proposed linearization of one register against the
/// specification, independently of the rules: `order` must contain every
/// definite operation once (unknown ones at most once), respect real-time
/// precedence, and make every operation return what it returned.
pub fn replay<V, T>(ops: &[Op<V, T>], order: &[usize]) -> Result<(), String>
where
    V: Clone + Eq + Debug,
    T: Ord + Copy + Debug,
{
    let mut seen = vec![false; ops.len()];
    for &i in order {
        if i >= ops.len() || std::mem::replace(&mut seen[i], true) {
            return Err(format!("op #{i} is out of range or appears twice"));
        }
    }
    if let Some(i) = (0..ops.len()).find(|&i| ops[i].is_definite() && !seen[i]) {
        return Err(format!("definite op #{i} is missing"));
    }
    for (pos, &a) in order.iter().enumerate() {
        for &b in &order[pos + 1..] {
            // b is linearized after a, so b must not precede a in real time.
            if end(&ops[b]) < End::At(ops[a].invoked) {
                return Err(format!("op #{b} completed before op #{a} was invoked"));
            }
        }
    }
    let mut state: Option<V> = None;
    for &i in order {
        let op = &ops[i];
        let ok = match (&op.call, &op.ret) {
            (_, Ret::Unknown) => {
                if let (Call::Put(v), None) = (&op.call, &state) {
                    state = Some(v.clone());
                }
                true
            }
            (Call::Put(v), Ret::Created) if state.is_none() => {
                state = Some(v.clone());
                true
            }
            (Call::Put(v), Ret::AlreadyChosen) => state.as_ref() == Some(v),
            (Call::Put(v), Ret::Conflict(c)) => state.as_ref() == Some(c) && c != v,
            (Call::Get, Ret::Found(x)) => state.as_ref() == Some(x),
            (Call::Get, Ret::NotFound) => state.is_none(),
            _ => false,
        };
        if !ok {
            return Err(format!("op #{i} answered {:?} in state {state:?}", op.ret));
        }
    }
    Ok(())
}

/// The history as text, one operation per line, for failure messages.
pub fn render<V: Debug, T: Debug>(ops: &[Op<V, T>]) -> String {
    render_where(ops, |_| true)
}

/// The operations of `ops` that `keep` selects, with their indices in `ops`.
pub fn render_where<V: Debug, T: Debug>(
    ops: &[Op<V, T>],
    keep: impl Fn(&Op<V, T>) -> bool,
) -> String {
    let mut out = String::new();
    for (i, op) in ops.iter().enumerate().filter(|(_, op)| keep(op)) {
        let call = match &op.call {
            Call::Put(v) => format!("PUT {v:?}"),
            Call::Get => "GET".to_owned(),
        };
        let done = match &op.completed {
            Some(t) => format!("{t:?}"),
            None => "never".to_owned(),
        };
        let _ = writeln!(
            out,
            "#{i:<4} p{:<3} {:?} .. {done:<16} key={:<6} {call} -> {:?}",
            op.process, op.invoked, op.key, op.ret
        );
    }
    out
}
