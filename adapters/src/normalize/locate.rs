//! Locating a message: district and street from the shipped gazetteer.
//!
//! Citizens rarely give a clean address; they write "光谷步行街旁边" or "户部巷那边". The gazetteer
//! (`adapters/data/gazetteer/wuhan.toml`, edited by administrators) lists each district with its
//! aliases, streets (街道) and landmarks; this module finds the longest name at each position and
//! takes the first place mentioned, because citizens name the place of the problem first and
//! their home (if at all) later. The names (about a thousand) are matched with one
//! Aho-Corasick automaton built at load (leftmost-longest), so a message is read once instead
//! of trying every name at every byte, which had become a fifth of a submission's CPU.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use serde::Deserialize;

/// The gazetteer as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GazetteerFile {
    pub city: String,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub district: Vec<DistrictEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistrictEntry {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub streets: Vec<String>,
    #[serde(default)]
    pub landmarks: Vec<String>,
    #[serde(default)]
    pub area: Vec<AreaEntry>,
}

/// A functional zone inside a district (东湖高新区 in 洪山区).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaEntry {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Where a message is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub district: String,
    /// The street (街道), landmark or zone named, when one was.
    pub street: Option<String>,
    /// The words in the text that located it.
    pub matched: String,
}

#[derive(Debug, Clone)]
struct Name {
    text: String,
    district: usize,
    /// `None` for a district name or alias.
    street: Option<String>,
}

/// A loaded gazetteer, ready to match.
#[derive(Debug, Clone)]
pub struct Gazetteer {
    districts: Vec<String>,
    exclude: Vec<String>,
    /// Longest first, so the first hit at a position is the longest.
    names: Vec<Name>,
    /// Every distinct name, leftmost-longest; pattern `i` is `names[first[i]]`.
    automaton: AhoCorasick,
    first: Vec<usize>,
}

/// Words before a place name that make it a citizen's origin, not the place of the matter.
const ORIGIN_MARKERS: &[&str] = &["户口在", "户籍在", "老家在", "老家是", "户口是"];

static WUHAN: LazyLock<Result<Gazetteer, String>> =
    LazyLock::new(|| Gazetteer::from_toml(include_str!("../../data/gazetteer/wuhan.toml")));

/// The shipped Wuhan gazetteer.
pub fn wuhan() -> Result<&'static Gazetteer, &'static str> {
    WUHAN.as_ref().map_err(String::as_str)
}

impl Gazetteer {
    pub fn from_toml(text: &str) -> Result<Gazetteer, String> {
        let file: GazetteerFile = toml::from_str(text).map_err(|e| format!("gazetteer: {e}"))?;
        let mut names = Vec::new();
        let mut districts = Vec::new();
        for (i, d) in file.district.iter().enumerate() {
            districts.push(d.name.clone());
            let own = std::iter::once(&d.name).chain(&d.aliases);
            names.extend(own.map(|n| Name {
                text: n.clone(),
                district: i,
                street: None,
            }));
            for s in d.streets.iter().chain(&d.landmarks) {
                names.push(Name {
                    text: s.clone(),
                    district: i,
                    street: Some(s.clone()),
                });
            }
            for a in &d.area {
                for n in std::iter::once(&a.name).chain(&a.aliases) {
                    names.push(Name {
                        text: n.clone(),
                        district: i,
                        street: Some(if *n == a.name {
                            a.name.clone()
                        } else {
                            format!("{}（{}）", n, a.name)
                        }),
                    });
                }
            }
        }
        names.retain(|n| !n.text.is_empty());
        names.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.text.cmp(&b.text)));
        // One pattern per distinct text: the first name with it in the sorted order wins, as
        // it did when names were tried in that order.
        let mut first: Vec<usize> = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if first.last().is_none_or(|&f| names[f].text != n.text) {
                first.push(i);
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(first.iter().map(|&i| names[i].text.as_str()))
            .map_err(|e| format!("gazetteer: {e}"))?;
        Ok(Gazetteer {
            districts,
            exclude: file.exclude,
            names,
            automaton,
            first,
        })
    }

    /// District names, in file order.
    pub fn districts(&self) -> &[String] {
        &self.districts
    }

    /// The canonical district for a name or alias (`"江岸"` -> `"江岸区"`).
    pub fn district_named(&self, name: &str) -> Option<&str> {
        let name = name.trim();
        self.names
            .iter()
            .find(|n| n.street.is_none() && n.text.eq_ignore_ascii_case(name))
            .map(|n| self.districts[n.district].as_str())
    }

    /// Every place named in the text, in order of mention, longest name at each position.
    pub fn find_all(&self, text: &str) -> Vec<Place> {
        let mut text = text.to_owned();
        for ex in &self.exclude {
            if !ex.is_empty() {
                text = text.replace(ex.as_str(), &" ".repeat(ex.len()));
            }
        }
        let mut found = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            // The leftmost position where a name starts, and the longest name there.
            let Some(m) = self.automaton.find(Input::new(&text).range(pos..)) else {
                break;
            };
            pos = m.start();
            let rest = &text[pos..];
            let whole_word = |n: &Name| {
                // ASCII aliases ("Wuchang") must be whole words.
                !(n.text.is_ascii()
                    && (rest[n.text.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
                        || text[..pos].ends_with(|c: char| c.is_ascii_alphanumeric())))
            };
            let longest = &self.names[self.first[m.pattern().as_usize()]];
            let hit = if whole_word(longest) {
                Some(longest)
            } else {
                // Rare (an ASCII alias inside a word): a shorter name at this position may
                // still count, so try them in order as before.
                self.names
                    .iter()
                    .find(|n| rest.starts_with(n.text.as_str()) && whole_word(n))
            };
            match hit {
                // "户口在新洲区" says where the citizen is registered, not where the matter is.
                Some(n) if ORIGIN_MARKERS.iter().any(|m| text[..pos].ends_with(m)) => {
                    pos += n.text.len();
                }
                Some(n) => {
                    found.push(Place {
                        district: self.districts[n.district].clone(),
                        street: n.street.clone(),
                        matched: n.text.clone(),
                    });
                    pos += n.text.len();
                }
                None => {
                    pos += rest.chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        found
    }

    /// Where the text is about: the district of the first place mentioned, and the first street
    /// or landmark in that district.
    pub fn locate(&self, text: &str) -> Option<Place> {
        let all = self.find_all(text);
        let first = all.first()?;
        let street = all
            .iter()
            .find(|p| p.district == first.district && p.street.is_some())
            .and_then(|p| p.street.clone());
        Some(Place {
            district: first.district.clone(),
            street,
            matched: first.matched.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> &'static Gazetteer {
        wuhan().expect("gazetteer parses")
    }

    #[test]
    fn thirteen_districts_with_streets() {
        assert_eq!(g().districts().len(), 13);
        assert_eq!(g().district_named("江岸"), Some("江岸区"));
        assert_eq!(g().district_named("wuchang"), Some("武昌区"));
        assert_eq!(g().district_named("光谷"), None);
    }

    #[test]
    fn landmarks_and_longest_names() {
        let p = g().locate("光谷步行街旁边烧烤店油烟很大").expect("place");
        assert_eq!(p.district, "洪山区");
        assert_eq!(p.street.as_deref(), Some("光谷步行街（东湖高新区）"));
        // 黎黄陂路 is in 江岸区, not 黄陂区; 江汉二桥街道 in 汉阳区, not 江汉区.
        assert_eq!(
            g().locate("黎黄陂路").map(|p| p.district).as_deref(),
            Some("江岸区")
        );
        assert_eq!(
            g().locate("江汉二桥街道").map(|p| p.district).as_deref(),
            Some("汉阳区")
        );
        assert_eq!(
            g().locate("洪山广场地铁站").map(|p| p.district).as_deref(),
            Some("武昌区")
        );
        assert_eq!(g().locate("这里青山绿水"), None);
        assert_eq!(
            g().locate("I live in Wuchang.")
                .map(|p| p.district)
                .as_deref(),
            Some("武昌区")
        );
        assert_eq!(g().locate("Wuchangfish"), None);
    }

    #[test]
    fn district_then_street() {
        let p = g().locate("江夏区纸坊街道某小区").expect("place");
        assert_eq!(
            (p.district.as_str(), p.street.as_deref()),
            ("江夏区", Some("纸坊街道"))
        );
    }
}
