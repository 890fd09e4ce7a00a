//! What a column's values are made of, as far as masking must look: text to scan, numbers a
//! card may hide in, containers (arrays, composites, records) to walk into, and types it
//! can't read. Built-in types are known here; types of the database (enums, domains, row
//! types, arrays of them, extension types) come from the catalog, classified by their binary
//! send function, which is what fixes their binary layout.

use std::collections::HashMap;
use std::sync::Arc;

use gateway_core::masking::SessionMasks;

/// How one type's values are masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Can't hold text (bool, dates, uuid, bytea...): never scanned; a rule makes it NULL.
    Scalar,
    /// Text (its binary form is the text): scanned; a rule replaces it with the rule's text.
    Text,
    /// json: scanned as JSON; a rule replaces it with a JSON string.
    Json,
    /// jsonb: in binary, a version byte (1) and then the JSON text.
    Jsonb,
    /// int2, int4, int8 (binary: big-endian of this many bytes): a whole value that is a card
    /// number becomes NULL; a rule makes it NULL.
    Int(u8),
    /// numeric: as integers, on its decimal text.
    Numeric,
    /// An enum label (its binary form is the label): a label the detectors flag, or a rule,
    /// makes it NULL, since a replacement text is no label of the type.
    Enum,
    /// An array of `elem` (its OID, for the binary header), `delim` between elements in text.
    Array {
        elem_oid: u32,
        elem: Arc<Shape>,
        delim: u8,
    },
    /// A row type (a table's or a composite type's) with its fields in order.
    Row(Arc<[Field]>),
    /// An anonymous record: binary fields carry their own type OIDs (built-in types are read,
    /// others are NULL); text fields are scanned as text.
    Record,
    /// A layout this proxy can't read: NULL in binary, scanned as text in text form.
    Opaque,
}

/// One field of a row type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub type_oid: u32,
    pub shape: Arc<Shape>,
    /// The column rule covering the field's column, if any.
    pub rule: Option<usize>,
}

/// A relation (`schema.relation`) and its columns (name, type OID) in order.
pub(crate) type RowColumns = (Arc<str>, Vec<(Arc<str>, u32)>);

/// A database type as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct TypeInfo {
    /// `pg_type.typtype`: b(ase), c(omposite), d(omain), e(num), p(seudo), r(ange), m(ultirange).
    pub typtype: u8,
    /// The binary send function's name, schema stripped (`textsend`, `array_send`...).
    pub send: Box<str>,
    pub elem: u32,
    pub base: u32,
    pub delim: u8,
    /// For a row type: `schema.relation` and its columns (name, type) in order.
    pub row: Option<RowColumns>,
    /// The row type is a view's (or a materialized view's).
    pub view: bool,
}

pub(crate) mod oid {
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
    /// An anonymous row (`SELECT t FROM (SELECT …) t`, `ROW(…)`) and arrays of them.
    pub const RECORD: u32 = 2249;
    pub const RECORD_ARRAY: u32 = 2287;
}

/// Built-in types whose values can't hold text.
const SCALARS: &[u32] = &[
    16, 17, 26, 700, 701, 790, 1082, 1083, 1114, 1184, 1186, 1266, 2950, 869, 650, 829, 774, 1560,
    1562, 28, 29, 27, 5069, 3220, 24, 2202, 2203, 2204, 2205, 2206, 4089, 4096, 3734, 3769, 4191,
    600, 601, 602, 603, 604, 628, 718, 1033, // geometric types, aclitem
    3904, 3906, 3908, 3910, 3912, 3926, 4451, 4532, 4533, 4534, 4535, 4536, // ranges
];

/// Built-in text-like types (their binary form is the text).
const TEXTS: &[u32] = &[
    oid::TEXT,
    oid::VARCHAR,
    oid::BPCHAR,
    oid::NAME,
    oid::XML,
    oid::UNKNOWN,
    oid::CHAR,
    194,  // pg_node_tree
    1790, // refcursor
    2275, // cstring
];

/// Built-in array types and their element types.
const ARRAYS: &[(u32, u32)] = &[
    (1009, 25),
    (1015, 1043),
    (1014, 1042),
    (1003, 19),
    (143, 142),
    (1002, 18),
    (199, 114),
    (3807, 3802),
    (1005, 21),
    (1007, 23),
    (1016, 20),
    (1231, 1700),
    (1000, 16),
    (1001, 17),
    (1021, 700),
    (1022, 701),
    (1028, 26),
    (1182, 1082),
    (1183, 1083),
    (1115, 1114),
    (1185, 1184),
    (1187, 1186),
    (1270, 1266),
    (2951, 2950),
    (791, 790),
    (1041, 869),
    (651, 650),
    (1040, 829),
    (1008, 24),
    (2210, 2205),
    (2211, 2206),
    (1034, 1033),
    (1263, 2275),
    (1011, 28),
    (1012, 29),
    (1010, 27),
    (22, 21), // int2vector
    (30, 26), // oidvector
    (oid::RECORD_ARRAY, oid::RECORD),
];

/// The shape of a built-in type; `None` for a type this table does not know.
pub(crate) fn builtin(t: u32) -> Option<Shape> {
    Some(match t {
        oid::JSON => Shape::Json,
        oid::JSONB => Shape::Jsonb,
        oid::INT2 => Shape::Int(2),
        oid::INT4 => Shape::Int(4),
        oid::INT8 => Shape::Int(8),
        oid::NUMERIC => Shape::Numeric,
        oid::RECORD => Shape::Record,
        t if TEXTS.contains(&t) => Shape::Text,
        t if SCALARS.contains(&t) => Shape::Scalar,
        t => {
            let &(_, elem) = ARRAYS.iter().find(|a| a.0 == t)?;
            Shape::Array {
                elem_oid: elem,
                elem: Arc::new(builtin(elem)?),
                delim: b',',
            }
        }
    })
}

/// Whether the catalog must be asked about type `t`.
pub(crate) fn needs_lookup(t: u32) -> bool {
    builtin(t).is_none()
}

/// How deep row types and arrays nest before the rest is treated as unreadable.
const MAX_NESTING: usize = 8;

/// Builds shapes from the catalog's answers and the session's rules.
pub(crate) struct Shaper<'a> {
    pub types: &'a HashMap<u32, Option<TypeInfo>>,
    pub masks: &'a SessionMasks,
}

impl Shaper<'_> {
    /// The shape of type `t`.
    pub fn shape(&self, t: u32) -> Arc<Shape> {
        Arc::new(self.build(t, 0))
    }

    fn build(&self, t: u32, depth: usize) -> Shape {
        if let Some(s) = builtin(t) {
            return s;
        }
        if depth > MAX_NESTING {
            return Shape::Opaque;
        }
        let Some(Some(info)) = self.types.get(&t) else {
            return Shape::Opaque;
        };
        if info.typtype == b'd' {
            return self.build(info.base, depth + 1);
        }
        match &*info.send {
            "textsend" | "varcharsend" | "bpcharsend" | "namesend" | "citextsend" => Shape::Text,
            "json_send" => Shape::Json,
            "jsonb_send" => Shape::Jsonb,
            "int2send" => Shape::Int(2),
            "int4send" => Shape::Int(4),
            "int8send" => Shape::Int(8),
            "numeric_send" => Shape::Numeric,
            "enum_send" => Shape::Enum,
            "boolsend" | "byteasend" | "float4send" | "float8send" | "date_send"
            | "timestamp_send" | "timestamptz_send" | "time_send" | "timetz_send"
            | "interval_send" | "uuid_send" | "oidsend" | "cash_send" | "inet_send"
            | "macaddr_send" | "macaddr8_send" | "bit_send" | "varbit_send" => Shape::Scalar,
            "array_send" | "int2vectorsend" | "oidvectorsend" if info.elem != 0 => Shape::Array {
                elem_oid: info.elem,
                elem: Arc::new(self.build(info.elem, depth + 1)),
                delim: info.delim,
            },
            "record_send" => match &info.row {
                Some((table, cols)) => Shape::Row(
                    cols.iter()
                        .map(|(name, ty)| Field {
                            type_oid: *ty,
                            shape: Arc::new(self.build(*ty, depth + 1)),
                            rule: self.field_rule(info.view, table, name),
                        })
                        .collect(),
                ),
                None => Shape::Record,
            },
            _ => Shape::Opaque,
        }
    }
}

impl Shaper<'_> {
    /// The rule covering field `name` of relation `table`'s row type. A view's row carries
    /// its base tables' values under the view's own names (`ssn AS x`): while column rules
    /// are in force, each of its fields is masked (fail closed), since its source isn't
    /// followed here.
    fn field_rule(&self, view: bool, table: &str, name: &str) -> Option<usize> {
        if view && !self.masks.column_rule_names().is_empty() {
            return Some(self.masks.rule_for(table, name).unwrap_or(usize::MAX));
        }
        self.masks.rule_for(table, name)
    }
}

impl Shape {
    /// Whether values of this shape can contain text (a rule replaces them with text rather
    /// than NULL).
    pub fn holds_text(&self) -> bool {
        match self {
            Shape::Text | Shape::Json | Shape::Jsonb | Shape::Record => true,
            Shape::Array { elem, .. } => elem.holds_text(),
            Shape::Row(fields) => fields.iter().any(|f| f.shape.holds_text()),
            _ => false,
        }
    }

    /// The rule covering a field somewhere inside values of this shape (a composite's field,
    /// an array's element's field, at any depth), if any.
    pub fn covered_rule(&self) -> Option<usize> {
        match self {
            Shape::Array { elem, .. } => elem.covered_rule(),
            Shape::Row(fields) => fields
                .iter()
                .find_map(|f| f.rule.or_else(|| f.shape.covered_rule())),
            _ => None,
        }
    }

    /// Whether masking may change a value of this shape, with `scan` (detectors or JSON
    /// field rules in force) and `card` (the card detector on).
    pub fn active(&self, scan: bool, card: bool) -> bool {
        match self {
            Shape::Scalar => false,
            Shape::Text | Shape::Json | Shape::Jsonb | Shape::Enum | Shape::Record => scan,
            Shape::Int(_) | Shape::Numeric => card,
            Shape::Array { elem, .. } => elem.active(scan, card),
            Shape::Row(fields) => fields
                .iter()
                .any(|f| f.rule.is_some() || f.shape.active(scan, card)),
            Shape::Opaque => true,
        }
    }
}
