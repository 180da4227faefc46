//! The category taxonomy administrators edit (`adapters/data/taxonomy.toml`).
//!
//! The first level holds the seven categories the trained model predicts and a few a hotline
//! needs beyond them (公共安全, 市场监管, 民政). The model's answer stays in `category`, because it
//! is measured and must stay comparable; the keyword route (`一级/二级`) is an extra hint for
//! dispatchers, in `subcategory`.

use rustc_hash::FxHashMap;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    pub category: Vec<Category>,
    /// Every keyword in one automaton, so a text is read once per route, not once per keyword.
    #[serde(skip)]
    keywords: Option<Keywords>,
}

/// The distinct keywords of all sub-categories and their automaton (overlapping matches).
#[derive(Debug, Clone)]
struct Keywords {
    automaton: AhoCorasick,
    index: FxHashMap<String, usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    /// Predicted by the trained model (its class names must match).
    #[serde(default)]
    pub trained: bool,
    #[serde(default)]
    pub sub: Vec<SubCategory>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubCategory {
    pub name: String,
    #[serde(default)]
    pub keywords: Vec<String>,
}

static SHIPPED: LazyLock<Result<Taxonomy, String>> =
    LazyLock::new(|| Taxonomy::from_toml(include_str!("../../data/taxonomy.toml")));

/// The shipped taxonomy.
pub fn shipped() -> Result<&'static Taxonomy, &'static str> {
    SHIPPED.as_ref().map_err(String::as_str)
}

impl Taxonomy {
    pub fn from_toml(text: &str) -> Result<Taxonomy, String> {
        let mut t: Taxonomy = toml::from_str(text).map_err(|e| format!("taxonomy: {e}"))?;
        let mut words: Vec<&str> = t
            .category
            .iter()
            .flat_map(|c| &c.sub)
            .flat_map(|s| &s.keywords)
            .map(String::as_str)
            .filter(|k| !k.is_empty())
            .collect();
        words.sort_unstable();
        words.dedup();
        let automaton = AhoCorasick::new(&words).map_err(|e| format!("taxonomy: {e}"))?;
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| ((*w).to_owned(), i))
            .collect();
        t.keywords = Some(Keywords { automaton, index });
        Ok(t)
    }

    /// Names of the first-level categories the model predicts.
    pub fn trained(&self) -> impl Iterator<Item = &str> {
        self.category
            .iter()
            .filter(|c| c.trained)
            .map(|c| c.name.as_str())
    }

    /// The keyword route `一级/二级`: within the predicted first-level category first, else in an
    /// untrained one (公共安全 …) when its keywords match. Most keyword hits win; file order
    /// breaks ties.
    pub fn route(&self, first_level: Option<&str>, text: &str) -> Option<String> {
        // Which keywords occur in the text: one pass of the automaton.
        let present: Option<(Vec<bool>, &FxHashMap<String, usize>)> =
            self.keywords.as_ref().map(|k| {
                let mut seen = vec![false; k.index.len()];
                for m in k.automaton.find_overlapping_iter(text) {
                    seen[m.pattern().as_usize()] = true;
                }
                (seen, &k.index)
            });
        let occurs = |k: &str| match &present {
            Some((seen, index)) => index.get(k).is_some_and(|&i| seen[i]),
            None => text.contains(k),
        };
        let best = |cats: &mut dyn Iterator<Item = &Category>| {
            let mut best: Option<(usize, String)> = None;
            for c in cats {
                for s in &c.sub {
                    let hits = s
                        .keywords
                        .iter()
                        .filter(|k| !k.is_empty() && occurs(k.as_str()))
                        .count();
                    if hits > 0 && best.as_ref().is_none_or(|(h, _)| hits > *h) {
                        best = Some((hits, format!("{}/{}", c.name, s.name)));
                    }
                }
            }
            best.map(|(_, r)| r)
        };
        let untrained = best(&mut self.category.iter().filter(|c| !c.trained));
        let within =
            first_level.and_then(|f| best(&mut self.category.iter().filter(|c| c.name == f)));
        untrained.or(within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_trained_categories_match_the_model() {
        let t = shipped().expect("taxonomy parses");
        let mut trained: Vec<&str> = t.trained().collect();
        trained.sort_unstable();
        let model = super::super::classify::shipped_model().expect("model");
        let mut classes: Vec<&str> = model.classes.iter().map(String::as_str).collect();
        classes.sort_unstable();
        assert_eq!(trained, classes);
        assert!(
            t.category
                .iter()
                .any(|c| c.name == "公共安全" && !c.trained)
        );
    }

    #[test]
    fn routes_to_second_level() {
        let t = shipped().expect("taxonomy parses");
        assert_eq!(
            t.route(Some("环境保护"), "楼下烧烤油烟太大").as_deref(),
            Some("环境保护/大气污染")
        );
        assert_eq!(
            t.route(Some("商贸旅游"), "接到电话被骗了两万，是刷单诈骗")
                .as_deref(),
            Some("公共安全/电信诈骗")
        );
        assert_eq!(t.route(Some("教育文体"), "你好").as_deref(), None);
    }
}
