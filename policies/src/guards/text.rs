//! Text analysis for the hit guards: words with their case and position, expanded
//! contractions, a light stemmer, typo-tolerant word equality and number values.

use std::collections::HashSet;

use super::lexicon::{NEG_PREFIXES, number_word};

/// One word of a text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub lower: String,
    /// Capitalised mid-sentence, or an acronym: a likely name.
    pub capitalised: bool,
    /// Written in capitals (two letters or more): may be spelled out elsewhere.
    pub acronym: bool,
    /// First word of a sentence.
    pub initial: bool,
}

/// A text broken into the forms every guard needs, computed once per text.
#[derive(Debug, Clone)]
pub(crate) struct Analysed {
    pub words: Vec<Word>,
    /// Lower-case words with contractions expanded ("can't" -> "can", "not").
    pub tokens: Vec<String>,
    pub stems: HashSet<String>,
}

impl Analysed {
    pub fn new(text: &str) -> Self {
        let words = split_words(text);
        let tokens: Vec<String> = words.iter().flat_map(|w| expand(&w.lower)).collect();
        let stems = tokens.iter().map(|t| stem(t)).collect();
        Self {
            words,
            tokens,
            stems,
        }
    }
}

/// Splits text into words: runs of letters (with one inner apostrophe), runs of digits
/// (with inner `.`, `,` or `:` between digits), and `%` as "percent". Digits and letters
/// are split apart ("10MB" -> "10", "mb"), hyphens separate words.
pub(crate) fn split_words(text: &str) -> Vec<Word> {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c == '’' { '\'' } else { c })
        .collect();
    let letters = chars.iter().filter(|c| c.is_alphabetic()).count();
    let upper = chars.iter().filter(|c| c.is_uppercase()).count();
    // Shouted text carries no case information.
    let shouted = letters > 0 && upper * 10 > letters * 6;
    let mut words = Vec::new();
    let mut initial = true;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], '.' | ',' | ':')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                        && i > start))
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            words.push(Word {
                lower: text,
                capitalised: false,
                acronym: false,
                initial,
            });
            initial = false;
        } else if c.is_alphabetic() {
            let start = i;
            let mut apostrophe = false;
            while i < chars.len()
                && (chars[i].is_alphabetic()
                    || (chars[i] == '\''
                        && !apostrophe
                        && chars.get(i + 1).is_some_and(|c| c.is_alphabetic())))
            {
                apostrophe |= chars[i] == '\'';
                i += 1;
            }
            let raw: String = chars[start..i].iter().collect();
            let first_upper = raw.chars().next().is_some_and(char::is_uppercase);
            let acronym = raw.chars().filter(|c| c.is_alphabetic()).count() >= 2
                && raw.chars().all(|c| !c.is_lowercase());
            let lower = raw.to_lowercase();
            let is_i = lower == "i" || lower.starts_with("i'");
            let capitalised =
                !shouted && !is_i && lower != "ok" && (acronym || (first_upper && !initial));
            words.push(Word {
                lower,
                capitalised,
                acronym: acronym && !shouted,
                initial,
            });
            initial = false;
        } else {
            if matches!(c, '.' | '?' | '!') {
                initial = true;
            } else if c == '%' {
                words.push(Word {
                    lower: "percent".to_owned(),
                    capitalised: false,
                    acronym: false,
                    initial,
                });
                initial = false;
            }
            i += 1;
        }
    }
    words
}

/// Expands a contraction into the words it stands for; possessives drop their `'s`.
pub(crate) fn expand(word: &str) -> Vec<String> {
    if word == "cannot" {
        return vec!["can".to_owned(), "not".to_owned()];
    }
    if let Some(base) = word.strip_suffix("n't") {
        let base = match base {
            "ca" => "can",
            "wo" => "will",
            "sha" => "shall",
            other => other,
        };
        return vec![base.to_owned(), "not".to_owned()];
    }
    match word.split_once('\'') {
        Some((base, _)) => vec![base.to_owned()],
        None => vec![word.to_owned()],
    }
}

/// A light suffix stripper: plurals, -ing, -ed, a final e, a doubled final consonant.
/// Enough to equate "included"/"include" and "submitting"/"submit", not a Porter stemmer.
pub(crate) fn stem(word: &str) -> String {
    let mut t = word.to_owned();
    for suffix in ["ings", "ing", "ies", "es", "ed", "s"] {
        if t.len() > suffix.len() + 2 && t.ends_with(suffix) {
            t.truncate(t.len() - suffix.len());
            if suffix == "ies" {
                t.push('y');
            }
            break;
        }
    }
    if t.len() > 3 && t.ends_with('e') {
        t.pop();
    }
    let bytes = t.as_bytes();
    if bytes.len() > 3 {
        let (last, before) = (bytes[bytes.len() - 1], bytes[bytes.len() - 2]);
        if last == before && !b"aeiousl".contains(&last) {
            t.pop();
        }
    }
    t
}

/// Damerau-Levenshtein distance (optimal string alignment) over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// True when `b` is a prefix-negated form of `a` (unmute, illegal, dislike).
pub(crate) fn negative_of(a: &str, b: &str) -> bool {
    a.len() >= 3
        && NEG_PREFIXES
            .iter()
            .any(|p| b.strip_prefix(p).is_some_and(|rest| rest == a))
}

/// The value a number word or digit string names, as text ("fifteen" -> "15").
pub(crate) fn number_value(word: &str) -> Option<String> {
    if word.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(word.replace(',', ""));
    }
    number_word(word).map(|v| v.to_string())
}

/// Equal, equal stems, the same number, or a typo apart. Numbers never match by
/// spelling, and a negated form is never a typo.
pub(crate) fn same_word(a: &str, b: &str) -> bool {
    if a == b || stem(a) == stem(b) {
        return true;
    }
    let (va, vb) = (number_value(a), number_value(b));
    if va.is_some() || vb.is_some() {
        return va == vb;
    }
    let (la, lb) = (a.chars().count(), b.chars().count());
    let n = la.min(lb);
    // Short words only forgive a dropped or doubled letter (aply, debt), never a changed
    // one (Mary, Mark).
    let short_ok = n == 4 && la != lb && a.chars().next() == b.chars().next();
    if n < 5 && !short_ok {
        return false;
    }
    let allowed = if n >= 8 { 2 } else { 1 };
    edit_distance(a, b) <= allowed && !negative_of(a, b) && !negative_of(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_case_position_and_split_digits() {
        let words = split_words("Is the 10MB plan on Sky? Yes, Sky's fine. I'm OK");
        let shown: Vec<(String, bool)> = words
            .iter()
            .map(|w| (w.lower.clone(), w.capitalised))
            .collect();
        let expected = [
            ("is", false),
            ("the", false),
            ("10", false),
            ("mb", true),
            ("plan", false),
            ("on", false),
            ("sky", true),
            ("yes", false),
            ("sky's", true),
            ("fine", false),
            ("i'm", false),
            ("ok", false),
        ];
        let expected: Vec<(String, bool)> = expected
            .iter()
            .map(|(w, c)| ((*w).to_owned(), *c))
            .collect();
        assert_eq!(shown, expected);
    }

    #[test]
    fn shouted_text_has_no_names() {
        assert!(
            split_words("WHAT ARE YOUR DELIVERY OPTIONS TO NORTHERN IRELAND?")
                .iter()
                .all(|w| !w.capitalised)
        );
    }

    #[test]
    fn numbers_keep_separators_and_percent_is_a_word() {
        let lower: Vec<String> = split_words("£1,600 at 9:15, 15% off 2.5kg")
            .into_iter()
            .map(|w| w.lower)
            .collect();
        assert_eq!(
            lower,
            ["1,600", "at", "9:15", "15", "percent", "off", "2.5", "kg"]
        );
    }

    #[test]
    fn contractions_expand() {
        assert_eq!(expand("can't"), ["can", "not"]);
        assert_eq!(expand("won't"), ["will", "not"]);
        assert_eq!(expand("cannot"), ["can", "not"]);
        assert_eq!(expand("men's"), ["men"]);
    }

    #[test]
    fn stems_equate_inflections() {
        for (a, b) in [
            ("included", "include"),
            ("submitting", "submit"),
            ("babies", "baby"),
            ("mondays", "monday"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} vs {b}");
        }
    }

    #[test]
    fn typos_match_but_names_and_negations_do_not() {
        for (a, b, expected) in [
            ("emergency", "emergancy", true),
            ("apply", "aply", true),
            ("child", "chlid", true),
            ("mary", "mark", false),
            ("sarah", "sam", false),
            ("australia", "austria", false),
            ("mute", "unmute", false),
            ("15", "fifteen", true),
            ("2", "20", false),
        ] {
            assert_eq!(same_word(a, b), expected, "{a} vs {b}");
            assert_eq!(same_word(b, a), expected, "{b} vs {a}");
        }
    }
}
