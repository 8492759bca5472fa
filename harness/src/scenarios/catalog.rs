//! What the features hold: each scenario (one operator criterion), its tags, and why it
//! would not run here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cucumber::gherkin::{self, GherkinEnv};

/// One criterion of one operator scenario, as written in a feature file.
#[derive(Debug, Clone)]
pub struct Criterion {
    /// The feature's name in `harness run`: `scenario-20`, `gateway`.
    pub scenario: String,
    pub feature: String,
    pub name: String,
    /// Tags of the feature and the scenario, without `@`.
    pub tags: Vec<String>,
    /// The scenario's description: for `@wip` criteria, why they are pending.
    pub description: Option<String>,
}

/// Why a criterion is left out of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Excluded {
    /// `@wip`: its behaviour arrives with a later issue.
    Pending(String),
    /// `@gpu` on a run without GPUs.
    NeedsGpu,
    /// `@real-engine` where the real engine images are not built; why, and the fix.
    NeedsImage(String),
}

impl Criterion {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Why this criterion does not run, given whether GPU criteria are enabled and which
    /// real engine images are missing (by the engine's feature tag, with why).
    pub fn excluded(&self, gpu: bool, missing_images: &[(&str, String)]) -> Option<Excluded> {
        if self.has_tag("wip") {
            let reason = self
                .description
                .clone()
                .unwrap_or_else(|| "work in progress".to_owned());
            return Some(Excluded::Pending(reason));
        }
        if self.has_tag("gpu") && !gpu {
            return Some(Excluded::NeedsGpu);
        }
        if self.has_tag("real-engine")
            && let Some((_, why)) = missing_images.iter().find(|(tag, _)| self.has_tag(tag))
        {
            return Some(Excluded::NeedsImage(why.clone()));
        }
        None
    }
}

/// Reads every `.feature` file in `dir`, sorted by name.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Criterion>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the features directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "feature"))
        .collect();
    files.sort();
    let mut criteria = Vec::new();
    for file in files {
        let feature = gherkin::Feature::parse_path(&file, GherkinEnv::default())
            .map_err(|e| anyhow::anyhow!("cannot parse {}: {e}", file.display()))?;
        let feature_tags: Vec<String> = feature
            .tags
            .iter()
            .map(|t| t.trim_start_matches('@').to_owned())
            .collect();
        // The first tag names the feature: `@scenario-20` for an operator scenario,
        // `@gateway` for a capability.
        let scenario = feature_tags.first().cloned().with_context(|| {
            format!(
                "{} has no naming tag; tag it @scenario-NN or with its capability (@gateway)",
                file.display()
            )
        })?;
        for s in feature
            .scenarios
            .iter()
            .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()))
        {
            let mut tags = feature_tags.clone();
            tags.extend(s.tags.iter().map(|t| t.trim_start_matches('@').to_owned()));
            criteria.push(Criterion {
                scenario: scenario.clone(),
                feature: feature.name.clone(),
                name: s.name.clone(),
                tags,
                description: s
                    .description
                    .as_ref()
                    .map(|d| d.trim().to_owned())
                    .filter(|d| !d.is_empty()),
            });
        }
    }
    Ok(criteria)
}

/// The features directory of this repository.
pub fn default_features_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../features")
}
