//! The tenant lifecycle: `provisioning → active ⇄ suspended → deleting → deleted`, and `failed`
//! when provisioning fails for good; a restore takes a `deleted` tenant back to `provisioning`.
//! Two moves undo a job that failed before it destroyed anything: a deletion called off returns
//! a `deleting` tenant to the status it had (active, suspended or failed), and a restore that
//! failed returns a `provisioning` tenant to `deleted`. Every other move is refused — by
//! [`crate::tenants::transition`], the one function that changes a tenant's status.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "tenant_status_enum", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Provisioning,
    Active,
    Suspended,
    Deleting,
    Deleted,
    Failed,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 6] = [
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Deleting,
        TenantStatus::Deleted,
        TenantStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleting => "deleting",
            TenantStatus::Deleted => "deleted",
            TenantStatus::Failed => "failed",
        }
    }

    /// Whether the lifecycle allows moving from `self` to `to`.
    pub fn can_become(self, to: TenantStatus) -> bool {
        use TenantStatus::*;
        matches!(
            (self, to),
            (Provisioning, Active)
                | (Provisioning, Failed)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Active, Deleting)
                | (Suspended, Deleting)
                | (Failed, Deleting)
                | (Deleting, Deleted)
                | (Deleted, Provisioning)
                | (Deleting, Active)
                | (Deleting, Suspended)
                | (Deleting, Failed)
                | (Provisioning, Deleted)
        )
    }

    /// Moves an administrator may make directly with `PATCH …/status`; the others belong to the
    /// provisioning and deletion jobs.
    pub fn can_be_set_by_admin(self, to: TenantStatus) -> bool {
        use TenantStatus::*;
        self.can_become(to) && matches!((self, to), (Active, Suspended) | (Suspended, Active))
    }
}

#[cfg(test)]
mod tests {
    use super::TenantStatus::{self, *};

    #[test]
    fn the_lifecycle_allows_exactly_its_moves() {
        let allowed = [
            (Provisioning, Active),
            (Provisioning, Failed),
            (Active, Suspended),
            (Suspended, Active),
            (Active, Deleting),
            (Suspended, Deleting),
            (Failed, Deleting),
            (Deleting, Deleted),
            (Deleted, Provisioning),
            (Deleting, Active),
            (Deleting, Suspended),
            (Deleting, Failed),
            (Provisioning, Deleted),
        ];
        for from in TenantStatus::ALL {
            for to in TenantStatus::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn admins_only_suspend_and_reactivate() {
        assert!(Active.can_be_set_by_admin(Suspended));
        assert!(Suspended.can_be_set_by_admin(Active));
        assert!(!Deleting.can_be_set_by_admin(Suspended));
        assert!(!Provisioning.can_be_set_by_admin(Active));
        assert!(!Active.can_be_set_by_admin(Deleted));
    }
}
