//! The word lists the hit guards consult. They are general English (function words,
//! number words, opposites, mutually exclusive alternatives, near-synonyms), not fitted
//! to any data set's sentences.

use std::collections::HashSet;
use std::sync::LazyLock;

use super::text::stem;

/// Function words, politeness, fillers and hedges: a change among them alone never
/// changes what a question asks.
const IGNORABLE_WORDS: &str = "a an the this that these those my your our their his her its me us \
    you i we it they them he she is are was were be been being am do does did doing done have has \
    had having can could would should shall will may might must to of for in on at by with about \
    as into onto from than so and or but if then also too just really very please thanks thank \
    cheers hi hello hey hiya morning um uh erm er ah oh okay ok yeah yes yep well like actually \
    basically sorry bother anyway kindly what how when where which who whom whose why there here \
    any get got way possible able usually typically normally generally currently still again s t \
    d ll re ve m";

/// Words that negate what follows.
const NEGATOR_WORDS: &str = "not no never without none nothing nobody nowhere neither nor non";

/// Prefixes that negate a word (unmute, non-refundable, illegal, dislike).
pub(crate) const NEG_PREFIXES: [&str; 7] = ["un", "non", "in", "im", "il", "ir", "dis"];

/// Named days and months and relative days: two different ones name different dates.
const DATE_WORDS: &str = "monday tuesday wednesday thursday friday saturday sunday weekday \
    weekend january february march april june july august september october november december \
    today tomorrow yesterday tonight";

/// Opposite ends of one scale or action: a word of one side against a word of the other.
const ANTONYMS: [(&str, &str); 45] = [
    ("on", "off"),
    ("in", "out"),
    ("up", "down"),
    ("enable", "disable"),
    ("allow permit", "ban forbid prohibit block"),
    ("include", "exclude except"),
    ("add extra", "remove take without"),
    (
        "increase raise higher bigger larger extend boost more",
        "decrease reduce lower smaller shorten less fewer",
    ),
    ("most highest maximum", "least lowest minimum"),
    ("best", "worst"),
    ("good better", "bad worse"),
    ("hot warm", "cold cool"),
    ("busy", "quiet"),
    ("open", "close shut"),
    ("start begin", "stop end finish"),
    ("accept", "decline reject refuse"),
    ("grant give", "revoke withdraw"),
    (
        "join enrol enroll subscribe",
        "leave withdraw quit unsubscribe",
    ),
    ("buy purchase", "sell"),
    ("lend", "borrow"),
    ("send", "receive"),
    ("import", "export"),
    ("upload", "download"),
    ("deposit", "withdraw"),
    ("arrive arrival", "depart departure"),
    ("before", "after"),
    ("early earlier", "late later"),
    ("first", "last"),
    ("old older", "new newer young younger"),
    ("safe", "dangerous"),
    ("legal lawful lawfully", "illegal unlawful unlawfully"),
    ("public", "private hide hidden"),
    ("cheap cheapest", "expensive"),
    ("pass", "fail"),
    ("win", "lose"),
    ("eat", "avoid"),
    ("improve", "damage worsen harm"),
    ("working", "fault faulty broken"),
    ("success successful", "failure unsuccessful"),
    ("inside", "outside"),
    ("within during", "after outside"),
    ("always", "never"),
    ("all every", "some"),
    ("same", "next different"),
    ("full", "part"),
];

/// Words that make a question about harm or avoidance: on one side only, the two questions
/// ask opposite things ("what should I eat" vs "what could interfere").
const HAZARD_WORDS: &str =
    "avoid prevent interfere harm harmful damage dangerous risk risky unsafe";

/// Mutually exclusive alternatives (who or what a question is scoped to). Classes are
/// separated by spaces, spellings of one class by `|`.
const CONTRASTS: [&str; 18] = [
    "economy business first premium",
    "free basic standard plus premium pro|professional business enterprise team",
    "domestic international long short",
    "employed self contractor agency freelance|freelancer",
    "home international|overseas|foreign eu",
    "online paper postal",
    "personal|sole|individual business joint",
    "undergraduate postgraduate",
    "basic higher additional",
    "member nonmember",
    "puppy kitten dog cat rabbit",
    "landlord tenant|renter homeowner|owner",
    "hand|cabin checked|hold",
    "red blue green yellow black white orange purple pink grey|gray brown silver gold",
    "iphone android ios windows linux mac|macos",
    "adult child|children|kid|kids baby|babies|infant teenager student senior|pensioner",
    "men|man|male|mens women|woman|female|womens boy girl",
    "weekday weekend",
];

/// Near-synonyms: a one-word change between members of a group keeps the answer.
const SYNONYMS: [&str; 38] = [
    "start begin commence",
    "end finish",
    "update change amend edit modify alter",
    "make submit file lodge send",
    "get obtain receive request",
    "store shop",
    "grade result mark score",
    "mute silence",
    "fix repair mend",
    "buy purchase",
    "cancel terminate end",
    "close shut",
    "cost price charge fee",
    "phone call ring telephone",
    "big large",
    "small little",
    "quick fast",
    "help assist support",
    "show display",
    "delete remove erase",
    "book reserve",
    "choose pick select",
    "need require",
    "find locate",
    "reply respond answer",
    "use utilise utilize",
    "allowed permitted",
    "kid child",
    "car vehicle",
    "holiday vacation",
    "parcel package",
    "shipping delivery postage",
    "cleaning clean",
    "guest visitor",
    "email mail",
    "payment pay",
    "pm evening tonight",
    "am morning",
];

const NUMBER_WORDS: [(&str, u32); 42] = [
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
    ("hundred", 100),
    ("thousand", 1000),
    ("million", 1_000_000),
    ("single", 1),
    ("third", 3),
    ("fourth", 4),
    ("fifth", 5),
    ("sixth", 6),
    ("seventh", 7),
    ("eighth", 8),
    ("ninth", 9),
    ("twice", 2),
    ("dozen", 12),
    ("tenth", 10),
];

pub(crate) fn number_word(word: &str) -> Option<u32> {
    NUMBER_WORDS
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, v)| *v)
}

fn words(list: &'static str) -> HashSet<&'static str> {
    list.split_whitespace().collect()
}

fn stems(list: &str) -> HashSet<String> {
    list.split_whitespace().map(stem).collect()
}

pub(crate) static IGNORABLE: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| words(IGNORABLE_WORDS));
pub(crate) static NEGATORS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| words(NEGATOR_WORDS));
/// Stems of the date words, compared with a text's stems ("mondays" -> "monday").
pub(crate) static DATES: LazyLock<HashSet<String>> = LazyLock::new(|| stems(DATE_WORDS));

/// Each pair of opposite sides, stemmed.
pub(crate) static ANTONYM_STEMS: LazyLock<Vec<(HashSet<String>, HashSet<String>)>> =
    LazyLock::new(|| {
        ANTONYMS
            .iter()
            .map(|(left, right)| (stems(left), stems(right)))
            .collect()
    });

/// Each contrast set as its classes, each class as the stems of its spellings.
pub(crate) static CONTRAST_STEMS: LazyLock<Vec<Vec<HashSet<String>>>> = LazyLock::new(|| {
    CONTRASTS
        .iter()
        .map(|set| {
            set.split_whitespace()
                .map(|class| class.split('|').map(stem).collect())
                .collect()
        })
        .collect()
});

/// Every stem that belongs to some contrast set: a word that sets a question's scope.
pub(crate) static SCOPE_STEMS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    CONTRAST_STEMS
        .iter()
        .flatten()
        .flat_map(|class| class.iter().cloned())
        .collect()
});

pub(crate) static HAZARD_STEMS: LazyLock<HashSet<String>> = LazyLock::new(|| stems(HAZARD_WORDS));

pub(crate) static SYNONYM_STEMS: LazyLock<Vec<HashSet<String>>> =
    LazyLock::new(|| SYNONYMS.iter().map(|group| stems(group)).collect());
