//! Every step phrase a feature may use, grouped by subject, with an example taken from
//! the features: what `harness steps` prints, so QA can write a new feature from existing
//! steps without reading Rust.

use std::path::Path;

use cucumber::codegen::WorldInventory;
use cucumber::gherkin::{self, GherkinEnv, StepType};

use super::world::AimaWorld;

/// One step definition.
#[derive(Debug, Clone)]
pub struct Phrase {
    /// The file of steps it lives in: `daemon`, `services`, `faults`, `gateway`…
    pub subject: String,
    /// `Given`, `When` or `Then`.
    pub keyword: &'static str,
    /// The phrase with its parameters: `a service {string} for model {string}`.
    pub text: String,
    /// The first step of a feature that it matches, as written there.
    pub example: Option<String>,
}

/// The parameter types of cucumber expressions, and how the steps' regexes spell them.
const PARAMETERS: [&str; 4] = ["string", "int", "float", "word"];

/// Every phrase, by subject, then keyword (Given, When, Then), then text.
pub fn all(features_dir: &Path) -> anyhow::Result<Vec<Phrase>> {
    let examples = feature_steps(features_dir)?;
    // How each parameter type appears inside a compiled step regex.
    let spelled: Vec<(String, String)> = PARAMETERS
        .iter()
        .filter_map(|p| {
            let regex = cucumber_expressions::Expression::regex(&format!("{{{p}}}")).ok()?;
            let inner = regex
                .as_str()
                .trim_start_matches('^')
                .trim_end_matches('$')
                .to_owned();
            Some((inner, format!("{{{p}}}")))
        })
        .collect();
    let mut phrases = Vec::new();
    let mut add = |keyword: &'static str, ty: StepType, definition: &dyn StepDefinition| {
        let (location, regex) = definition.location_and_regex();
        let subject = Path::new(location.path)
            .file_stem()
            .and_then(|s| s.to_str())
            .map_or("general", |s| if s == "mod" { "general" } else { s })
            .to_owned();
        let example = examples
            .iter()
            .find(|(t, text)| *t == ty && regex.is_match(text))
            .map(|(_, text)| format!("{keyword} {text}"));
        phrases.push(Phrase {
            subject,
            keyword,
            text: readable(regex.as_str(), &spelled),
            example,
        });
    };
    for given in cucumber::codegen::inventory::iter::<<AimaWorld as WorldInventory>::Given> {
        add("Given", StepType::Given, given);
    }
    for when in cucumber::codegen::inventory::iter::<<AimaWorld as WorldInventory>::When> {
        add("When", StepType::When, when);
    }
    for then in cucumber::codegen::inventory::iter::<<AimaWorld as WorldInventory>::Then> {
        add("Then", StepType::Then, then);
    }
    let order = |k: &str| ["Given", "When", "Then"].iter().position(|x| *x == k);
    phrases.sort_by(|a, b| {
        (&a.subject, order(a.keyword), &a.text).cmp(&(&b.subject, order(b.keyword), &b.text))
    });
    Ok(phrases)
}

/// A step definition of any keyword: where it is and what it matches.
trait StepDefinition {
    fn location_and_regex(&self) -> (cucumber::step::Location, regex::Regex);
}

impl<T: cucumber::codegen::StepConstructor<AimaWorld>> StepDefinition for T {
    fn location_and_regex(&self) -> (cucumber::step::Location, regex::Regex) {
        let (location, regex, _) = self.inner();
        (location, regex())
    }
}

/// A step regex as a phrase: cucumber parameters back to `{string}`, `{int}`…, a few
/// regex idioms to words, and the anchors gone.
fn readable(regex: &str, spelled: &[(String, String)]) -> String {
    let mut text = regex
        .trim_start_matches('^')
        .trim_end_matches('$')
        .to_owned();
    // The n-th `{string}` of a step names its groups `__n_0`, `__n_1`: make them all the first.
    if let Ok(group) = regex::Regex::new(r"__\d+_(\d+)>") {
        text = group.replace_all(&text, "__0_$1>").into_owned();
    }
    for (inner, name) in spelled {
        text = text.replace(inner.as_str(), name);
    }
    for (idiom, word) in [
        (r#""([^"]+)""#, "{string}"),
        (r"(\d+)", "{int}"),
        (r"(.+)", "{text}"),
        (r"(?:is|are)", "is|are"),
        ("s?", "(s)"),
    ] {
        text = text.replace(idiom, word);
    }
    // Escaped punctuation (`\-`, `\.`) reads as itself.
    regex::Regex::new(r"\\([[:punct:]])")
        .map(|escaped| escaped.replace_all(&text, "$1").into_owned())
        .unwrap_or(text)
}

/// Every step written in the features, with its resolved type (an `And` takes the type of
/// the step before it).
fn feature_steps(dir: &Path) -> anyhow::Result<Vec<(StepType, String)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "feature"))
        .collect();
    files.sort();
    let mut steps = Vec::new();
    for file in files {
        let feature = gherkin::Feature::parse_path(&file, GherkinEnv::default())
            .map_err(|e| anyhow::anyhow!("cannot parse {}: {e}", file.display()))?;
        let scenarios = feature
            .background
            .iter()
            .map(|b| &b.steps)
            .chain(feature.scenarios.iter().map(|s| &s.steps))
            .chain(
                feature
                    .rules
                    .iter()
                    .flat_map(|r| r.scenarios.iter().map(|s| &s.steps)),
            );
        for list in scenarios {
            steps.extend(list.iter().map(|s| (s.ty, s.value.clone())));
        }
    }
    Ok(steps)
}

/// The listing `harness steps` prints.
pub fn listing(phrases: &[Phrase]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut subject = "";
    for p in phrases {
        if p.subject != subject {
            subject = &p.subject;
            let _ = writeln!(out, "\n{subject}");
        }
        let _ = writeln!(out, "  {} {}", p.keyword, p.text);
        match &p.example {
            Some(example) => {
                let _ = writeln!(out, "      e.g. {example}");
            }
            None => {
                let _ = writeln!(out, "      (no feature uses it yet)");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_read_as_phrases() {
        let spelled = vec![(r"(\d+)".to_owned(), "{int}".to_owned())];
        assert_eq!(
            readable(
                r#"^exactly (\d+) containers? of this run (?:is|are) left$"#,
                &spelled
            ),
            "exactly {int} container(s) of this run is|are left"
        );
        assert_eq!(
            readable(
                r#"^the start of service "([^"]+)" was tried (\d+) times?$"#,
                &[]
            ),
            "the start of service {string} was tried {int} time(s)"
        );
    }
}
