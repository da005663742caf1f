//! A rule's demands on a valid credential: every listed scope and every listed role.

use crate::core::identity::Identity;
use crate::core::policy::rules::Rule;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDenial {
    MissingScopes(Vec<String>),
    MissingRoles(Vec<String>),
}

pub fn check(rule: &Rule, identity: &Identity) -> Result<(), PolicyDenial> {
    let missing = |wanted: &[String], held: &[String]| -> Vec<String> {
        wanted
            .iter()
            .filter(|w| !held.contains(w))
            .cloned()
            .collect()
    };
    let scopes = missing(&rule.require_scopes, &identity.scopes);
    if !scopes.is_empty() {
        return Err(PolicyDenial::MissingScopes(scopes));
    }
    let held = identity.effective_roles.as_ref().unwrap_or(&identity.roles);
    let roles = missing(&rule.require_roles, held);
    if !roles.is_empty() {
        return Err(PolicyDenial::MissingRoles(roles));
    }
    Ok(())
}
