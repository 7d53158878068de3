//! What every pod tusk runs has in common: containers under the Kubernetes "restricted" Pod
//! Security Standard (no privilege escalation, every capability dropped, the runtime's default
//! seccomp profile, non-root) with a read-only root file system.

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};

/// The container runtime's default seccomp profile.
pub fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// The security context of every container tusk runs.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_container_meets_the_restricted_standard() {
        let context = restricted_container_security();
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(
            context.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            context.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".to_owned())
        );
    }
}
