//! Category classification: which category's policy applies to a request.

use crate::config::{Category, Config, MatchRules};

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
    pub reason: &'static str,
}

impl Config {
    /// The explicitly named category if it exists, else the first category (in file order)
    /// whose rules all match, else the default category.
    pub fn classify<'c>(&'c self, facts: &RequestFacts<'_>) -> Classification<'c> {
        if let Some(name) = (facts.header)(CATEGORY_HEADER)
            && let Some(category) = self.category(name.trim())
        {
            return Classification {
                category,
                reason: "header",
            };
        }
        let matched = self
            .categories
            .iter()
            .find(|c| !c.rules.is_empty() && c.rules.matches(facts));
        match matched {
            Some(category) => Classification {
                category,
                reason: "rules",
            },
            None => Classification {
                category: &self.categories[self.cache.default_category],
                reason: "default",
            },
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
        match.patterns = ["```"]
        match.keywords = ["python"]

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
}
