//! Category classification: which category's policy applies to a request.

use crate::config::{Category, Config, MatchRules};
use crate::prototypes::{PrototypeMatch, Prototypes};

/// Header a client may use to name its category explicitly.
pub const CATEGORY_HEADER: &str = "x-cachet-category";

/// What classification looks at, extracted from a request by the gateway.
#[allow(missing_debug_implementations)] // holds a closure
pub struct RequestFacts<'a> {
    /// `/v1/chat/completions` or `/v1/completions`.
    pub route: &'a str,
    pub model: &'a str,
    /// The query text the rules' keywords and patterns run over.
    pub text: &'a str,
    /// Looks a request header up by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// The category chosen, and why: the reason shows in the lookup trace.
#[derive(Debug, Clone, Copy)]
pub struct Classification<'c> {
    pub category: &'c Category,
    /// `"header"`, `"rules"`, `"prototype"` or `"default"`.
    pub reason: &'static str,
    /// For `"prototype"`: how near the query was to the category's prototype.
    pub prototype: Option<PrototypeMatch>,
}

impl Config {
    /// The category named by the `x-cachet-category` header if it exists and allows that
    /// (`selectable_by_header`), else the first category (in file order) whose rules all
    /// match, else the default category.
    pub fn classify<'c>(&'c self, facts: &RequestFacts<'_>) -> Classification<'c> {
        self.by_header_or_rules(facts)
            .unwrap_or_else(|| self.default_classification())
    }

    /// Like [`Config::classify`], with the query's embedding tried between the rules and the
    /// default: the nearest category prototype wins when its similarity reaches
    /// `classifier.min_similarity` and beats the second nearest by `classifier.margin`.
    pub fn classify_with<'c>(
        &'c self,
        facts: &RequestFacts<'_>,
        query: Option<&[f32]>,
        prototypes: &Prototypes,
    ) -> Classification<'c> {
        if let Some(decided) = self.by_header_or_rules(facts) {
            return decided;
        }
        let nearest = query.and_then(|query| prototypes.nearest(self, query));
        if let Some((name, found)) = nearest
            && let Some(category) = self.category(name)
        {
            return Classification {
                category,
                reason: "prototype",
                prototype: Some(found),
            };
        }
        self.default_classification()
    }

    /// Whether classifying this request would use the query's embedding: no header or rule
    /// decides and some category has examples. The gateway embeds before classifying only
    /// then.
    pub fn needs_query_vector(&self, facts: &RequestFacts<'_>) -> bool {
        self.categories.iter().any(|c| !c.examples.is_empty())
            && self.by_header_or_rules(facts).is_none()
    }

    fn by_header_or_rules<'c>(&'c self, facts: &RequestFacts<'_>) -> Option<Classification<'c>> {
        // A header naming a category that does not allow it is ignored, not an error: the
        // response's x-cachet-category says which category was used.
        if let Some(name) = (facts.header)(CATEGORY_HEADER)
            && let Some(category) = self.category(name.trim())
            && category.selectable_by_header
        {
            return Some(Classification {
                category,
                reason: "header",
                prototype: None,
            });
        }
        self.categories
            .iter()
            .find(|c| !c.rules.is_empty() && c.rules.matches(facts))
            .map(|category| Classification {
                category,
                reason: "rules",
                prototype: None,
            })
    }

    fn default_classification(&self) -> Classification<'_> {
        Classification {
            category: &self.categories[self.cache.default_category],
            reason: "default",
            prototype: None,
        }
    }
}

impl MatchRules {
    /// True when every kind of rule that is set has at least one match.
    pub fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        let models = self.models.is_empty() || self.models.iter().any(|p| p.matches(facts.model));
        let routes = self.routes.is_empty() || self.routes.iter().any(|r| r == facts.route);
        let headers = self
            .headers
            .iter()
            .all(|(name, value)| (facts.header)(name).is_some_and(|v| v == *value));
        let text = (self.keywords.is_none() && self.patterns.is_empty())
            || self
                .keywords
                .as_ref()
                .is_some_and(|k| k.is_match(facts.text))
            || self.patterns.iter().any(|p| p.is_match(facts.text));
        models && routes && headers && text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        [categories.live]
        cacheable = false
        match.keywords = ["weather", "right now"]

        [categories.code]
        selectable_by_header = true
        match.patterns = ["```"]
        match.keywords = ["python"]

        [categories.faq]
        shared = true
        match.keywords = ["opening hours"]

        [categories.internal]
        match.models = ["corp-*"]
        match.headers = { "X-Team" = "search" }

        [categories.completions]
        match.routes = ["/v1/completions"]

        [categories.general]
    "#;

    fn check(
        route: &str,
        model: &str,
        text: &str,
        headers: &[(&str, &str)],
        expected: (&str, &str),
    ) {
        let config = Config::from_toml(CONFIG).expect("config is valid");
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
        };
        let facts = RequestFacts {
            route,
            model,
            text,
            header: &lookup,
        };
        let got = config.classify(&facts);
        assert_eq!(
            (got.category.name.as_str(), got.reason),
            expected,
            "text {text:?}"
        );
    }

    const CHAT: &str = "/v1/chat/completions";

    #[test]
    fn keywords_match_whole_words_case_insensitively() {
        check(
            CHAT,
            "m",
            "What's the WEATHER in Paris?",
            &[],
            ("live", "rules"),
        );
        check(
            CHAT,
            "m",
            "Is it raining right now?",
            &[],
            ("live", "rules"),
        );
        check(
            CHAT,
            "m",
            "weatherproof jackets",
            &[],
            ("general", "default"),
        );
    }

    #[test]
    fn first_matching_category_in_file_order_wins() {
        check(CHAT, "m", "python weather script", &[], ("live", "rules"));
        check(
            CHAT,
            "m",
            "write python to sort a list",
            &[],
            ("code", "rules"),
        );
        check(
            CHAT,
            "m",
            "fix this ```let x = 1;```",
            &[],
            ("code", "rules"),
        );
    }

    #[test]
    fn every_rule_kind_must_match() {
        check(
            CHAT,
            "corp-llm",
            "hello",
            &[("x-team", "search")],
            ("internal", "rules"),
        );
        check(
            CHAT,
            "corp-llm",
            "hello",
            &[("x-team", "ads")],
            ("general", "default"),
        );
        check(
            CHAT,
            "gpt-4o",
            "hello",
            &[("x-team", "search")],
            ("general", "default"),
        );
    }

    #[test]
    fn routes_select_categories() {
        check(
            "/v1/completions",
            "m",
            "hello",
            &[],
            ("completions", "rules"),
        );
    }

    #[test]
    fn header_names_a_category() {
        check(
            CHAT,
            "m",
            "weather",
            &[("x-cachet-category", "code")],
            ("code", "header"),
        );
        check(
            CHAT,
            "m",
            "weather",
            &[("x-cachet-category", "nope")],
            ("live", "rules"),
        );
    }

    #[test]
    fn a_header_is_ignored_unless_the_category_allows_it() {
        // `faq` is shared: naming it would read and write every tenant's entries.
        check(
            CHAT,
            "m",
            "what is my account balance?",
            &[("x-cachet-category", "faq")],
            ("general", "default"),
        );
        check(
            CHAT,
            "m",
            "python weather",
            &[("x-cachet-category", "internal")],
            ("live", "rules"),
        );
        // Its own rules still select it.
        check(
            CHAT,
            "m",
            "What are the opening hours?",
            &[],
            ("faq", "rules"),
        );
    }

    const PROTOTYPE_CONFIG: &str = r#"
        [classifier]
        min_similarity = 0.5
        margin = 0.1

        [categories.live]
        match.keywords = ["weather"]
        examples = ["what is the weather like"]

        [categories.code]
        examples = ["how do I sort a list in python", "fix my segfault"]

        [categories.general]
        selectable_by_header = true
    "#;

    /// Classifies with prototypes `live` = x axis, `code` = y axis.
    fn check_with(
        text: &str,
        headers: &[(&str, &str)],
        query: Option<&[f32]>,
        expected: (&str, &str),
    ) {
        let config = Config::from_toml(PROTOTYPE_CONFIG).expect("config is valid");
        let prototypes = Prototypes::new(
            &config,
            vec![
                ("live".to_owned(), vec![vec![1.0, 0.0]]),
                ("code".to_owned(), vec![vec![0.0, 1.0], vec![0.0, 2.0]]),
            ],
        );
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
        };
        let facts = RequestFacts {
            route: CHAT,
            model: "m",
            text,
            header: &lookup,
        };
        let got = config.classify_with(&facts, query, &prototypes);
        assert_eq!(
            (got.category.name.as_str(), got.reason),
            expected,
            "text {text:?}"
        );
        assert_eq!(got.prototype.is_some(), got.reason == "prototype");
        let rules_only = config.classify(&facts);
        let decided_without_vector = matches!(rules_only.reason, "header" | "rules");
        assert_eq!(config.needs_query_vector(&facts), !decided_without_vector);
    }

    #[test]
    fn header_and_rules_come_before_prototypes() {
        let code_like: &[f32] = &[0.0, 1.0];
        check_with(
            "hi",
            &[("x-cachet-category", "general")],
            Some(code_like),
            ("general", "header"),
        );
        check_with("the weather", &[], Some(code_like), ("live", "rules"));
        check_with("hi", &[], Some(code_like), ("code", "prototype"));
    }

    #[test]
    fn prototypes_need_similarity_and_margin() {
        // Near neither prototype.
        check_with("hi", &[], Some(&[-1.0, -1.0]), ("general", "default"));
        // Near both: the margin is not met.
        check_with("hi", &[], Some(&[1.0, 0.9]), ("general", "default"));
        check_with("hi", &[], Some(&[1.0, 0.5]), ("live", "prototype"));
        // Without a vector, the default.
        check_with("hi", &[], None, ("general", "default"));
    }

    #[test]
    fn a_prototype_match_carries_its_figures() {
        let config = Config::from_toml(PROTOTYPE_CONFIG).expect("config is valid");
        let prototypes = Prototypes::new(&config, vec![("code".to_owned(), vec![vec![0.0, 1.0]])]);
        let lookup = |_: &str| None;
        let facts = RequestFacts {
            route: CHAT,
            model: "m",
            text: "hi",
            header: &lookup,
        };
        let got = config.classify_with(&facts, Some(&[0.6, 0.8]), &prototypes);
        let found = got.prototype.expect("a prototype match");
        assert!((found.similarity - 0.8).abs() < 1e-6, "{found:?}");
        // The only prototype: the margin is its similarity.
        assert!((found.margin - 0.8).abs() < 1e-6, "{found:?}");
    }

    #[test]
    fn no_examples_no_query_vector() {
        let config = Config::from_toml(CONFIG).expect("config is valid");
        let lookup = |_: &str| None;
        let facts = RequestFacts {
            route: CHAT,
            model: "m",
            text: "hello",
            header: &lookup,
        };
        assert_eq!(config.classify(&facts).reason, "default");
        assert!(!config.needs_query_vector(&facts));
    }
}
