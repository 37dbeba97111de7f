//! Which store an instance uses: `fleet.yaml`'s `store:` beside the state directory, else the
//! embedded SQLite file `.fleet/fleet.db`. A configured store that cannot be opened is an
//! error with its reason (exit 4), never a quiet fallback to the file.

use fleet_config::StoreConfig;
use fleet_engine::layout::StateDir;
use fleet_store::{Durability, Store, StoreUrl};
use std::sync::Arc;

/// The store the instance around `layout` names.
pub fn configured(layout: &StateDir) -> anyhow::Result<StoreUrl> {
    let home = layout.root().parent();
    Ok(match crate::load_instance(home)?.store {
        StoreConfig::Sqlite => StoreUrl::Sqlite(layout.db()),
        StoreConfig::Postgres(url) => StoreUrl::Postgres(url),
    })
}

/// Whether there is state to read: the SQLite file exists, or a shared store is configured
/// (whose emptiness the commands themselves report).
pub fn exists(layout: &StateDir) -> anyhow::Result<bool> {
    Ok(match configured(layout)? {
        StoreUrl::Sqlite(path) => path.exists(),
        StoreUrl::Postgres(_) => true,
    })
}

/// Opens the instance's store; `fsync` makes SQLite commits survive power loss.
pub fn open(layout: &StateDir, fsync: bool) -> anyhow::Result<Arc<dyn Store>> {
    let url = configured(layout)?;
    if let StoreUrl::Sqlite(_) = url {
        std::fs::create_dir_all(layout.root())
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", layout.root().display()))?;
    }
    let durability = if fsync {
        Durability::Full
    } else {
        Durability::Process
    };
    let shown = match &url {
        StoreUrl::Sqlite(path) => path.display().to_string(),
        StoreUrl::Postgres(_) => "the configured store (fleet.yaml `store:`)".to_string(),
    };
    url.open(durability)
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot open {shown}")))
}

/// Whether an error is the store's own (unreachable, unknown, too new), or memory's in the
/// store's database: exit 4.
pub fn is_store_failure(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<fleet_store::StoreError>(),
            Some(
                fleet_store::StoreError::Unreachable(..)
                    | fleet_store::StoreError::UnknownScheme(_)
                    | fleet_store::StoreError::InvalidUrl(_)
                    | fleet_store::StoreError::TooNew { .. }
            )
        ) || matches!(
            e.downcast_ref::<fleet_memory::MemoryError>(),
            Some(fleet_memory::MemoryError::Unreachable(..))
        )
    })
}
