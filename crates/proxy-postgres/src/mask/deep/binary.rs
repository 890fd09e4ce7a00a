//! Binary arrays (`array_send`) and composites / records (`record_send`): decoded with every
//! length checked against what is left before it is used, elements and fields masked by
//! their types, and the value rebuilt only when something inside changed.

use bytes::BufMut;
use gateway_core::masking::Masked;

use super::shape::{self, Shape};
use super::{Splice, Unreadable, Walker};
use crate::codec::reader::Reader;

/// PostgreSQL's limit on array dimensions.
const MAX_DIMS: i32 = 6;

impl Walker<'_> {
    /// `ndim`, has-nulls flag, element OID, (length, lower bound) per dimension, then each
    /// element as an int32 length (-1 for NULL) and its bytes.
    pub(super) fn binary_array(
        &mut self,
        elem_oid: u32,
        elem: &Shape,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<Masked, Unreadable> {
        let mut r = Reader::new(v);
        let ndim = r.i32().map_err(|_| Unreadable)?;
        if !(0..=MAX_DIMS).contains(&ndim) {
            return Err(Unreadable);
        }
        let _flags = r.i32().map_err(|_| Unreadable)?;
        let oid = r.u32().map_err(|_| Unreadable)?;
        let mut count: usize = if ndim == 0 { 0 } else { 1 };
        for _ in 0..ndim {
            let len = r.i32().map_err(|_| Unreadable)?;
            let _lower = r.i32().map_err(|_| Unreadable)?;
            let len = usize::try_from(len).map_err(|_| Unreadable)?;
            count = count.checked_mul(len).ok_or(Unreadable)?;
        }
        // Every element takes 4 bytes at least: bound the count before walking.
        if count > r.remaining() / 4 {
            return Err(Unreadable);
        }
        // The header names the element type; one other than the column's says is read by
        // its own OID, built-in types only.
        let own;
        let elem = if oid == elem_oid {
            elem
        } else {
            own = shape::builtin(oid).unwrap_or(Shape::Opaque);
            &own
        };
        let mut child = self.pool.take(2 * depth + 2);
        let mut splice = Splice::new(v);
        let mut nulled = false;
        let mut result = Ok(());
        for _ in 0..count {
            let start = v.len() - r.remaining();
            let Some(bytes) = r.nullable_bytes().map_err(|_| Unreadable)? else {
                continue;
            };
            let end = v.len() - r.remaining();
            match self.walk(elem, true, whole, bytes, &mut child, depth + 1) {
                Masked::Unchanged => {}
                Masked::Null => {
                    splice.cut(out, start, end);
                    out.put_i32(-1);
                    nulled = true;
                }
                Masked::Replaced => {
                    let Ok(len) = i32::try_from(child.len()) else {
                        result = Err(Unreadable);
                        break;
                    };
                    splice.cut(out, start, end);
                    out.put_i32(len);
                    out.extend_from_slice(&child);
                }
            }
        }
        self.pool.put(2 * depth + 2, child);
        result?;
        if r.remaining() != 0 {
            return Err(Unreadable);
        }
        let m = splice.finish(out);
        if nulled && let Some(flag) = out.get_mut(4..8) {
            flag.copy_from_slice(&1i32.to_be_bytes());
        }
        Ok(m)
    }

    /// A field count, then per field its type OID, an int32 length (-1 for NULL) and its
    /// bytes. A row type's fields are judged as their columns; an anonymous record's by
    /// their own (built-in) types.
    pub(super) fn binary_row(
        &mut self,
        shape: &Shape,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<Masked, Unreadable> {
        let mut r = Reader::new(v);
        let n = usize::try_from(r.i32().map_err(|_| Unreadable)?).map_err(|_| Unreadable)?;
        if n > r.remaining() / 8 {
            return Err(Unreadable);
        }
        let fields = match shape {
            Shape::Row(f) => Some(f),
            _ => None,
        };
        // A row whose fields are not the ones the catalog named (the table changed since):
        // every field is masked as covered.
        let stale = fields.is_some_and(|f| f.len() != n);
        let whole = if stale {
            whole.or(Some(usize::MAX))
        } else {
            whole
        };
        let mut child = self.pool.take(2 * depth + 2);
        let mut splice = Splice::new(v);
        let mut result = Ok(());
        for i in 0..n {
            let oid = r.u32().map_err(|_| Unreadable)?;
            let start = v.len() - r.remaining();
            let Some(bytes) = r.nullable_bytes().map_err(|_| Unreadable)? else {
                continue;
            };
            let end = v.len() - r.remaining();
            let own;
            let (shape, rule) = match fields.and_then(|f| f.get(i)) {
                Some(f) if f.type_oid == oid => (&*f.shape, f.rule.or(whole)),
                Some(_) => (&Shape::Opaque, whole),
                None => {
                    own = shape::builtin(oid).unwrap_or(Shape::Opaque);
                    (&own, whole)
                }
            };
            match self.walk(shape, true, rule, bytes, &mut child, depth + 1) {
                Masked::Unchanged => {}
                Masked::Null => {
                    splice.cut(out, start, end);
                    out.put_i32(-1);
                }
                Masked::Replaced => {
                    let Ok(len) = i32::try_from(child.len()) else {
                        result = Err(Unreadable);
                        break;
                    };
                    splice.cut(out, start, end);
                    out.put_i32(len);
                    out.extend_from_slice(&child);
                }
            }
        }
        self.pool.put(2 * depth + 2, child);
        result?;
        if r.remaining() != 0 {
            return Err(Unreadable);
        }
        Ok(splice.finish(out))
    }
}
