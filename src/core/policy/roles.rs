//! An organisation's role hierarchy (`role_hierarchy`: each role names the roles it includes, so
//! with `owner ⊃ admin ⊃ developer ⊃ viewer` an owner meets a rule that requires `developer`).
//! Compiled once into each role's full set of included roles; cycles are configuration errors.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::config_error::ConfigError;

/// The most roles a hierarchy may name: far above any organisation's ladder, and it bounds the
/// work of expanding a token's roles.
const MAX_ROLES: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleHierarchy {
    /// Every role that includes others, with all it includes (transitively), sorted.
    includes: BTreeMap<String, Vec<String>>,
}

impl RoleHierarchy {
    /// `path` names the field for errors (`role_hierarchy`, `jwt_providers.corp.role_hierarchy`).
    pub fn compile(path: &str, raw: BTreeMap<String, Vec<String>>) -> Result<Self, ConfigError> {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for (role, included) in &raw {
            check_name(&format!("{path}.{role}"), role)?;
            names.insert(role);
            for (i, name) in included.iter().enumerate() {
                check_name(&format!("{path}.{role}[{i}]"), name)?;
                names.insert(name);
            }
        }
        if names.len() > MAX_ROLES {
            return Err(ConfigError::new(
                path,
                format!("names {} roles; at most {MAX_ROLES}", names.len()),
            ));
        }
        let mut includes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for role in raw.keys() {
            let mut trail = Vec::new();
            expand(path, &raw, role, &mut includes, &mut trail)?;
        }
        Ok(RoleHierarchy { includes })
    }

    pub fn is_empty(&self) -> bool {
        self.includes.is_empty()
    }

    /// The token's roles and every role they include, without repeats, in a stable order (the
    /// token's own first).
    pub fn effective(&self, roles: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(roles.len());
        for role in roles {
            if !out.contains(role) {
                out.push(role.clone());
            }
        }
        for role in roles {
            for included in self.includes.get(role).into_iter().flatten() {
                if !out.contains(included) {
                    out.push(included.clone());
                }
            }
        }
        out
    }
}

fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 256
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(ConfigError::new(
            path,
            format!(
                "{name:?} is not a role name (non-empty, no spaces, commas or control characters)"
            ),
        ));
    }
    Ok(())
}

/// Computes what `role` includes (memoised in `includes`, so each role is expanded once);
/// `trail` is the chain of roles being expanded, which a cycle comes back to.
fn expand<'a>(
    path: &str,
    raw: &'a BTreeMap<String, Vec<String>>,
    role: &'a str,
    includes: &mut BTreeMap<String, Vec<String>>,
    trail: &mut Vec<&'a str>,
) -> Result<(), ConfigError> {
    if includes.contains_key(role) {
        return Ok(());
    }
    if trail.contains(&role) {
        trail.push(role);
        return Err(ConfigError::new(
            path,
            format!("roles include each other in a cycle: {}", trail.join(" → ")),
        ));
    }
    trail.push(role);
    let mut all = BTreeSet::new();
    for included in raw.get(role).into_iter().flatten() {
        expand(path, raw, included, includes, trail)?;
        all.insert(included.clone());
        all.extend(
            includes
                .get(included.as_str())
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    trail.pop();
    includes.insert(role.to_string(), all.into_iter().collect());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> BTreeMap<String, Vec<String>> {
        [
            ("owner", vec!["admin"]),
            ("admin", vec!["developer", "billing"]),
            ("developer", vec!["viewer"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
        .collect()
    }

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_role_includes_everything_below_it() {
        let h = RoleHierarchy::compile("role_hierarchy", ladder()).unwrap();
        assert_eq!(
            h.effective(&roles(&["owner", "user"])),
            roles(&["owner", "user", "admin", "billing", "developer", "viewer"])
        );
        assert_eq!(
            h.effective(&roles(&["developer"])),
            roles(&["developer", "viewer"])
        );
        assert_eq!(h.effective(&roles(&["viewer"])), roles(&["viewer"]));
        assert!(h.effective(&[]).is_empty());
    }

    #[test]
    fn cycles_and_bad_names_name_the_field() {
        let mut cyclic = ladder();
        cyclic.insert("viewer".into(), vec!["owner".into()]);
        let error = RoleHierarchy::compile("role_hierarchy", cyclic).unwrap_err();
        assert_eq!(error.path, "role_hierarchy");
        assert!(error.message.contains("cycle"), "{}", error.message);
        let mut itself = BTreeMap::new();
        itself.insert("admin".to_string(), vec!["admin".to_string()]);
        assert!(RoleHierarchy::compile("role_hierarchy", itself).is_err());
        let mut bad = ladder();
        bad.insert("ops".into(), vec!["a b".into()]);
        let error = RoleHierarchy::compile("jwt_providers.corp.role_hierarchy", bad).unwrap_err();
        assert_eq!(error.path, "jwt_providers.corp.role_hierarchy.ops[0]");
    }
}
