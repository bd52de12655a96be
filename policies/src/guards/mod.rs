//! Hit guards: deterministic checks that refuse a semantic-cache candidate whose question
//! differs from the query in what makes the answer differ (numbers, dates, negation,
//! names, direction, opposites, scope, a changed slot of a minimal pair). Every check is
//! symmetric and passes a text against itself; the refusal names the guard and the
//! words, for the lookup trace.

mod lexicon;
mod minimal;
mod text;
mod verdict;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use lexicon::{ANTONYM_STEMS, CONTRAST_STEMS, DATES, HAZARD_STEMS, NEGATORS};
use text::{negative_of, number_value};

pub(crate) use lexicon::IGNORABLE;
pub(crate) use minimal::align;
pub(crate) use text::{Analysed, same_word, stem};
pub use verdict::{Candidate, judge};

/// One kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guard {
    /// Numeric values (digits and number words) and am/pm differ.
    Numbers,
    /// Named days, months or relative days differ.
    Dates,
    /// One side is negated ("not", "never", "without", "non-", "un-").
    Negation,
    /// A capitalised name or acronym appears on one side only, or names swap order.
    Entities,
    /// A word is where something goes on one side and where it comes from on the other.
    Roles,
    /// Opposite words (include/exclude, most/least, on/off).
    Antonyms,
    /// Different members of a set of alternatives (adults/children, free/enterprise).
    Contrast,
    /// The same sentence with one content slot changed.
    Minimal,
}

impl Guard {
    pub const ALL: [Guard; 8] = [
        Guard::Numbers,
        Guard::Dates,
        Guard::Negation,
        Guard::Entities,
        Guard::Roles,
        Guard::Antonyms,
        Guard::Contrast,
        Guard::Minimal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Guard::Numbers => "numbers",
            Guard::Dates => "dates",
            Guard::Negation => "negation",
            Guard::Entities => "entities",
            Guard::Roles => "roles",
            Guard::Antonyms => "antonyms",
            Guard::Contrast => "contrast",
            Guard::Minimal => "minimal",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// The guards a category runs, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSet(BTreeSet<Guard>);

impl GuardSet {
    pub fn all() -> Self {
        Self(Guard::ALL.into_iter().collect())
    }

    pub fn none() -> Self {
        Self(BTreeSet::new())
    }

    pub fn contains(&self, guard: Guard) -> bool {
        self.0.contains(&guard)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for GuardSet {
    fn default() -> Self {
        Self::all()
    }
}

impl FromIterator<Guard> for GuardSet {
    fn from_iter<I: IntoIterator<Item = Guard>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Why a semantic candidate was not served: a metrics label and the lookup trace's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Its similarity is below the threshold in force.
    Threshold,
    /// A hit guard found the questions asking different things.
    Guard(Guard),
    /// The conversations before the questions are not compatible.
    Context,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold",
            Self::Guard(guard) => guard.name(),
            Self::Context => "context",
        }
    }
}

/// Why a candidate was refused, with the detail for the lookup trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

fn refuse(guard: Guard, detail: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        reason: RefusalReason::Guard(guard),
        detail: detail.into(),
    })
}

/// Checks a cached question against a query with the given guards.
pub fn check_guards(cached: &str, query: &str, guards: &GuardSet) -> Result<(), Refusal> {
    if guards.is_empty() {
        return Ok(());
    }
    let (a, b) = (Analysed::new(cached), Analysed::new(query));
    for guard in &guards.0 {
        match guard {
            Guard::Numbers => numbers(&a, &b)?,
            Guard::Dates => dates(&a, &b)?,
            Guard::Negation => negation(&a, &b)?,
            Guard::Entities => entities(&a, &b)?,
            Guard::Roles => roles(&a, &b)?,
            Guard::Antonyms => antonyms(&a, &b)?,
            Guard::Contrast => contrast(&a, &b)?,
            Guard::Minimal => {
                if let Some(detail) = minimal::check(&a.tokens, &b.tokens) {
                    refuse(Guard::Minimal, detail)?;
                }
            }
        }
    }
    Ok(())
}

/// Numeric values in order of size, and the am/pm markers that follow numbers.
pub(crate) fn number_values(t: &Analysed) -> (Vec<String>, Vec<&str>) {
    let mut values = Vec::new();
    let mut meridiem = Vec::new();
    for (i, w) in t.words.iter().enumerate() {
        if let Some(mut v) = number_value(&w.lower) {
            let digits = w.lower.starts_with(|c: char| c.is_ascii_digit());
            // A span in weeks is compared in days ("two weeks" = "14 days").
            let next = t.words.get(i + 1).map(|n| n.lower.as_str());
            if matches!(next, Some("week" | "weeks"))
                && let Ok(n) = v.parse::<f64>()
            {
                v = format_number(n * 7.0);
            }
            if let Some(next) = t.words.get(i + 1).filter(|_| digits)
                && (next.lower == "am" || next.lower == "pm")
            {
                meridiem.push(next.lower.as_str());
            }
            values.push(v);
        }
    }
    values.sort();
    meridiem.sort_unstable();
    (values, meridiem)
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn numbers(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    let ((va, ma), (vb, mb)) = (number_values(a), number_values(b));
    // "a", "an" and "one" all say one: a lone 1 on one side is no conflict.
    let not_one = |v: &Vec<String>| v.iter().filter(|x| *x != "1").cloned().collect::<Vec<_>>();
    if not_one(&va) != not_one(&vb) {
        return refuse(Guard::Numbers, format!("{va:?} vs {vb:?}"));
    }
    if !ma.is_empty() && !mb.is_empty() && ma != mb {
        return refuse(Guard::Numbers, format!("{ma:?} vs {mb:?}"));
    }
    Ok(())
}

pub(crate) fn date_stems(t: &Analysed) -> BTreeSet<&String> {
    t.stems.iter().filter(|s| DATES.contains(*s)).collect()
}

fn dates(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    let (da, db) = (date_stems(a), date_stems(b));
    if !da.is_empty() && !db.is_empty() && da != db {
        return refuse(Guard::Dates, format!("{da:?} vs {db:?}"));
    }
    Ok(())
}

fn negation(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    let count = |t: &Analysed| {
        t.tokens
            .iter()
            .filter(|w| NEGATORS.contains(w.as_str()))
            .count()
    };
    if count(a) % 2 != count(b) % 2 {
        return refuse(Guard::Negation, "one side is negated");
    }
    for w in a.tokens.iter().filter(|w| !b.tokens.contains(w)) {
        for v in b.tokens.iter().filter(|v| !a.tokens.contains(v)) {
            if negative_of(w, v) || negative_of(v, w) {
                return refuse(Guard::Negation, format!("{w} vs {v}"));
            }
        }
    }
    Ok(())
}

/// Stems of the capitalised names and acronyms of a text, in order.
pub(crate) fn entity_stems(t: &Analysed) -> Vec<String> {
    t.words
        .iter()
        .filter(|w| w.capitalised)
        .filter_map(|w| text::expand(&w.lower).into_iter().next())
        .map(|w| stem(&w))
        .collect()
}

/// True when consecutive words of `t` start with the acronym's letters, in order
/// ("pac": "porting authorisation code").
fn spelled_out(acronym: &str, t: &Analysed) -> bool {
    let letters: Vec<char> = acronym.chars().collect();
    t.tokens.windows(letters.len()).any(|window| {
        window
            .iter()
            .zip(&letters)
            .all(|(word, letter)| word.starts_with(*letter))
    })
}

/// Names of `t` that the other text neither contains nor spells out.
fn names_for_check(t: &Analysed, other: &Analysed) -> Vec<String> {
    t.words
        .iter()
        .filter(|w| w.capitalised && !(w.acronym && spelled_out(&w.lower, other)))
        .filter_map(|w| text::expand(&w.lower).into_iter().next())
        .map(|w| stem(&w))
        .collect()
}

fn entities(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    let (ea, eb) = (names_for_check(a, b), names_for_check(b, a));
    let found = |e: &String, other: &Analysed| other.stems.iter().any(|t| same_word(e, t));
    if let Some(e) = ea.iter().find(|e| !found(e, b)) {
        return refuse(
            Guard::Entities,
            format!("{e:?} only in the cached question"),
        );
    }
    if let Some(e) = eb.iter().find(|e| !found(e, a)) {
        return refuse(Guard::Entities, format!("{e:?} only in the query"));
    }
    fn order<'s>(xs: &'s [String], ys: &[String]) -> Vec<&'s String> {
        let mut kept: Vec<&String> = xs.iter().filter(|x| ys.contains(x)).collect();
        kept.dedup();
        kept
    }
    let (oa, ob) = (order(&ea, &eb), order(&eb, &ea));
    let distinct: BTreeSet<_> = oa.iter().collect();
    if distinct.len() > 1 && oa != ob {
        return refuse(
            Guard::Entities,
            format!("names in another order: {oa:?} vs {ob:?}"),
        );
    }
    Ok(())
}

/// For the first content word after a source ("from", "off", "out") or goal ("to",
/// "into", "onto") preposition: which of the two it is.
fn direction_roles(t: &Analysed) -> HashMap<String, &'static str> {
    let mut roles = HashMap::new();
    for (i, w) in t.tokens.iter().enumerate() {
        let role = match w.as_str() {
            "from" | "off" | "out" => "source",
            "to" | "into" | "onto" => "goal",
            _ => continue,
        };
        let next = t.tokens[i + 1..]
            .iter()
            .take(3)
            .find(|u| !IGNORABLE.contains(u.as_str()));
        if let Some(u) = next {
            roles.entry(stem(u)).or_insert(role);
        }
    }
    roles
}

fn roles(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    let (ra, rb) = (direction_roles(a), direction_roles(b));
    let mut conflicts: Vec<&String> = ra
        .iter()
        .filter(|(w, role)| rb.get(*w).is_some_and(|r| r != *role))
        .map(|(w, _)| w)
        .collect();
    conflicts.sort();
    match conflicts.first() {
        Some(w) => refuse(
            Guard::Roles,
            format!("{w:?} is a source on one side and a goal on the other"),
        ),
        None => Ok(()),
    }
}

fn antonyms(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    let only = |x: &Analysed, y: &Analysed, side: &std::collections::HashSet<String>| {
        side.iter()
            .any(|s| x.stems.contains(s) && !y.stems.contains(s))
    };
    for (left, right) in ANTONYM_STEMS.iter() {
        if (only(a, b, left) && only(b, a, right)) || (only(a, b, right) && only(b, a, left)) {
            let mut l: Vec<_> = left.iter().collect();
            let mut r: Vec<_> = right.iter().collect();
            l.sort();
            r.sort();
            return refuse(Guard::Antonyms, format!("{l:?} vs {r:?}"));
        }
    }
    let harm = |t: &Analysed| t.stems.iter().any(|s| HAZARD_STEMS.contains(s));
    if harm(a) != harm(b) {
        return refuse(Guard::Antonyms, "harm or avoidance on one side only");
    }
    Ok(())
}

fn contrast(a: &Analysed, b: &Analysed) -> Result<(), Refusal> {
    for set in CONTRAST_STEMS.iter() {
        let classes = |t: &Analysed| -> BTreeSet<usize> {
            set.iter()
                .enumerate()
                .filter(|(_, class)| class.iter().any(|s| t.stems.contains(s)))
                .map(|(i, _)| i)
                .collect()
        };
        let (ca, cb) = (classes(a), classes(b));
        let only_a: Vec<_> = ca.difference(&cb).collect();
        let only_b: Vec<_> = cb.difference(&ca).collect();
        if !only_a.is_empty() && !only_b.is_empty() {
            let name = |i: &&usize| {
                let mut spellings: Vec<_> = set[**i].iter().collect();
                spellings.sort();
                spellings[0].clone()
            };
            let shown_a: Vec<String> = only_a.iter().map(name).collect();
            let shown_b: Vec<String> = only_b.iter().map(name).collect();
            return refuse(Guard::Contrast, format!("{shown_a:?} vs {shown_b:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
