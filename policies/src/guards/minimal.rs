//! The minimal-pair guard: two questions with the same frame and one slot changed ask
//! about different things, so a substitution refuses unless the two words are
//! near-synonyms, and an insertion refuses when it narrows the scope.

use super::lexicon::{IGNORABLE, SCOPE_STEMS, SYNONYM_STEMS};
use super::text::{same_word, stem};

/// Longest common subsequence of two token lists under [`same_word`]: matched index pairs.
pub(crate) fn align(a: &[String], b: &[String]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    let width = m + 1;
    let mut table = vec![0u16; (n + 1) * width];
    let same: Vec<bool> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| same_word(x, y)))
        .collect();
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i * width + j] = if same[i * m + j] {
                table[(i + 1) * width + j + 1] + 1
            } else {
                table[(i + 1) * width + j].max(table[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut pairs = Vec::new();
    while i < n && j < m {
        if same[i * m + j] && table[i * width + j] == table[(i + 1) * width + j + 1] + 1 {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if table[(i + 1) * width + j] >= table[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

fn content(tokens: &[String]) -> Vec<&str> {
    tokens
        .iter()
        .map(String::as_str)
        .filter(|t| !IGNORABLE.contains(t))
        .collect()
}

/// One side is an acronym of the other ("fa" for "factor authentication").
fn abbreviates(short: &[&str], long: &[&str]) -> bool {
    let [acronym] = short else { return false };
    acronym.chars().count() == long.len()
        && long.len() >= 2
        && acronym
            .chars()
            .zip(long)
            .all(|(letter, word)| word.starts_with(letter))
}

fn synonyms(a: &[&str], b: &[&str]) -> bool {
    if abbreviates(a, b) || abbreviates(b, a) {
        return true;
    }
    let ([x], [y]) = (a, b) else { return false };
    let (x, y) = (stem(x), stem(y));
    SYNONYM_STEMS
        .iter()
        .any(|group| group.contains(&x) && group.contains(&y))
}

/// Why the two token lists form a minimal pair whose changed slot changes the answer.
/// Alignment ties can split the change differently in each direction, so both are tried
/// and either refusing refuses: the guard stays symmetric.
pub(crate) fn check(a: &[String], b: &[String]) -> Option<String> {
    check_directed(a, b).or_else(|| check_directed(b, a))
}

fn check_directed(a: &[String], b: &[String]) -> Option<String> {
    let pairs = align(a, b);
    let mut hunks = Vec::new();
    let mut previous = (0, 0);
    for &(i, j) in pairs.iter().chain(std::iter::once(&(a.len(), b.len()))) {
        let removed = content(&a[previous.0..i]);
        let added = content(&b[previous.1..j]);
        if !removed.is_empty() || !added.is_empty() {
            hunks.push((removed, added));
        }
        previous = (i + 1, j + 1);
    }
    let matched_content = pairs
        .iter()
        .filter(|(i, _)| !IGNORABLE.contains(a[*i].as_str()))
        .count();
    let [(removed, added)] = hunks.as_slice() else {
        return None;
    };
    if matched_content == 0 {
        return None;
    }
    if !removed.is_empty() && !added.is_empty() {
        if synonyms(removed, added) {
            return None;
        }
        return Some(format!("{removed:?} changed to {added:?}"));
    }
    let inserted = if removed.is_empty() { added } else { removed };
    inserted
        .iter()
        .any(|w| SCOPE_STEMS.contains(&stem(w)))
        .then(|| format!("scope word {inserted:?} on one side only"))
}
