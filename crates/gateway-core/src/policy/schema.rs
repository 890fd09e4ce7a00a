//! The shipped Cedar schema, parsed once, and what the engine derives from it: the
//! validator, the entity type names and each action's entity with its action groups.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, Schema, Validator};

/// The schema every policy file is validated against (Cedar schema syntax).
pub const SCHEMA_TEXT: &str = include_str!("schema.cedarschema");

/// Everything derived from the schema; built once per process.
pub(crate) struct Shipped {
    pub schema: Schema,
    pub validator: Validator,
    pub identity_type: EntityTypeName,
    pub group_type: EntityTypeName,
    pub connection_type: EntityTypeName,
    /// Action id (`sql.read`) → its entity and the entities of the groups it belongs to.
    /// A request carries these so that `action in Action::"sql"` holds without the
    /// per-request cost of schema-checked entity loading.
    pub actions: HashMap<String, (EntityUid, Vec<Entity>)>,
}

static SHIPPED: LazyLock<Result<Shipped, String>> = LazyLock::new(build);

/// The shipped schema. Fails only if the schema text itself is broken, which a unit test
/// rules out; callers still report it instead of panicking.
pub(crate) fn shipped() -> Result<&'static Shipped, String> {
    SHIPPED.as_ref().map_err(Clone::clone)
}

fn build() -> Result<Shipped, String> {
    let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT)
        .map_err(|e| format!("the shipped policy schema does not parse: {e}"))?;
    let action_store = schema
        .action_entities()
        .map_err(|e| format!("the shipped policy schema has bad actions: {e}"))?;
    let mut actions = HashMap::new();
    for entity in action_store.iter() {
        let uid = entity.uid();
        let mut carried = vec![entity.clone()];
        if let Some(ancestors) = action_store.ancestors(&uid) {
            carried.extend(ancestors.filter_map(|a| action_store.get(a).cloned()));
        }
        actions.insert(uid.id().unescaped().to_string(), (uid, carried));
    }
    let type_name =
        |n: &str| EntityTypeName::from_str(n).map_err(|e| format!("entity type name `{n}`: {e}"));
    Ok(Shipped {
        validator: Validator::new(schema.clone()),
        schema,
        identity_type: type_name("Identity")?,
        group_type: type_name("Group")?,
        connection_type: type_name("Connection")?,
        actions,
    })
}

impl Shipped {
    /// An entity uid of `ty` with id `id` (ids are arbitrary strings, no escaping needed).
    pub fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }

    /// The action uid for a Cedar action id, if the schema declares it.
    pub fn action(&self, id: &str) -> Option<&(EntityUid, Vec<Entity>)> {
        self.actions.get(id)
    }
}
