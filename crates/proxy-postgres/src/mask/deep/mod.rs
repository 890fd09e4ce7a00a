//! Masking inside values of structured types, in binary and in text form: arrays (any
//! element type), composites (row types, with each field judged as its column), anonymous
//! records, enums, and integers and numerics in binary. Both forms give the same masked
//! value: a covered field or element is replaced by the rule's text (or NULL where its type
//! can't hold text), other text is scanned by the detectors, and containers are rebuilt
//! with their lengths (binary) or quoting (text) kept valid. Pure functions over bytes.

mod binary;
pub(crate) mod shape;
mod text;

#[cfg(test)]
mod tests;

use gateway_core::masking::{ColumnPlan, MaskCounts, Masked, SessionMasks, TypeHint};

pub(crate) use shape::{Shape, Shaper, TypeInfo};

/// A value this walker could not read: it is masked whole (fail closed).
#[derive(Debug)]
struct Unreadable;

/// Scratch buffers by nesting level, reused across values so an unchanged value allocates
/// nothing.
#[derive(Default)]
pub(crate) struct Pool {
    bytes: Vec<Vec<u8>>,
    items: Vec<text::Items>,
}

/// Take slot `i` of `slots` (empty if it was never used), leaving an empty one.
fn take_slot<T: Default>(slots: &mut Vec<T>, i: usize) -> T {
    if slots.len() <= i {
        slots.resize_with(i + 1, T::default);
    }
    std::mem::take(&mut slots[i])
}

impl Pool {
    fn take(&mut self, i: usize) -> Vec<u8> {
        take_slot(&mut self.bytes, i)
    }

    fn put(&mut self, i: usize, mut v: Vec<u8>) {
        v.clear();
        if let Some(slot) = self.bytes.get_mut(i) {
            *slot = v;
        }
    }

    fn take_items(&mut self, i: usize) -> text::Items {
        take_slot(&mut self.items, i)
    }

    fn put_items(&mut self, i: usize, mut v: text::Items) {
        v.clear();
        if let Some(slot) = self.items.get_mut(i) {
            *slot = v;
        }
    }
}

/// Masks one structured value.
pub(crate) struct Walker<'a> {
    pub masks: &'a SessionMasks,
    pub counts: &'a mut MaskCounts,
    pub pool: &'a mut Pool,
    /// The card detector is on (integers are checked).
    pub card: bool,
}

/// Copies a container's bytes into `out` once something inside changes.
struct Splice<'v> {
    src: &'v [u8],
    from: usize,
    started: bool,
}

impl<'v> Splice<'v> {
    fn new(src: &'v [u8]) -> Splice<'v> {
        Splice {
            src,
            from: 0,
            started: false,
        }
    }

    /// `src[start..end]` is replaced by what the caller writes to `out` next.
    fn cut(&mut self, out: &mut Vec<u8>, start: usize, end: usize) {
        if !self.started {
            out.clear();
            self.started = true;
        }
        out.extend_from_slice(&self.src[self.from..start]);
        self.from = end;
    }

    fn finish(self, out: &mut Vec<u8>) -> Masked {
        if !self.started {
            return Masked::Unchanged;
        }
        out.extend_from_slice(&self.src[self.from..]);
        Masked::Replaced
    }
}

/// Nesting beyond this is masked whole.
const MAX_DEPTH: usize = 16;

impl Walker<'_> {
    /// Mask `v`, a value of `shape` in binary (`binary`) or text form, into `out`. `whole`:
    /// the column rule covering the value (every text inside is replaced by the rule's text,
    /// every other leaf becomes NULL).
    pub fn value(
        &mut self,
        shape: &Shape,
        binary: bool,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
    ) -> Masked {
        self.walk(shape, binary, whole, v, out, 0)
    }

    fn walk(
        &mut self,
        shape: &Shape,
        binary: bool,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Masked {
        if depth > MAX_DEPTH {
            return self.null(whole.or(Some(usize::MAX)));
        }
        if let Some(rule) = whole
            && !shape.holds_text()
        {
            return self.null(Some(rule));
        }
        match shape {
            Shape::Scalar => Masked::Unchanged,
            Shape::Text => match whole {
                Some(rule) => self.replace(rule, TypeHint::Text, v, out),
                None => self.masks.mask_value(v, TypeHint::Text, out, self.counts),
            },
            Shape::Json => self.json(whole, v, out),
            Shape::Jsonb if !binary => self.json(whole, v, out),
            Shape::Jsonb => match v.split_first() {
                Some((1, json)) => {
                    let m = self.json(whole, json, out);
                    if m == Masked::Replaced {
                        out.insert(0, 1);
                    }
                    m
                }
                _ => self.null(whole.or(Some(usize::MAX))),
            },
            Shape::Int(width) => match binary {
                true => self.binary_int(*width, v),
                false => self.card(v),
            },
            Shape::Numeric => match binary {
                true => self.binary_numeric(v),
                false => self.card(v),
            },
            Shape::Enum => match self.masks.mask_value(v, TypeHint::Text, out, self.counts) {
                Masked::Unchanged => Masked::Unchanged,
                _ => Masked::Null,
            },
            Shape::Array {
                elem_oid,
                elem,
                delim,
            } => {
                let r = match binary {
                    true => self.binary_array(*elem_oid, elem, whole, v, out, depth),
                    false => self.text_array(elem, *delim, whole, v, out, depth),
                };
                r.unwrap_or_else(|_| self.unreadable(shape, binary, whole, v, out))
            }
            Shape::Row(_) | Shape::Record => {
                let r = match binary {
                    true => self.binary_row(shape, whole, v, out, depth),
                    false => self.text_row(shape, whole, v, out, depth),
                };
                r.unwrap_or_else(|_| self.unreadable(shape, binary, whole, v, out))
            }
            Shape::Opaque if binary => self.null(whole.or(Some(usize::MAX))),
            Shape::Opaque => match whole {
                Some(rule) => self.replace(rule, TypeHint::Text, v, out),
                None => self.masks.mask_value(v, TypeHint::Text, out, self.counts),
            },
        }
    }

    /// A value that could not be read as its type says: NULL in binary; in text, replaced
    /// whole when a rule covers it or anything inside it, else scanned as text.
    fn unreadable(
        &mut self,
        shape: &Shape,
        binary: bool,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
    ) -> Masked {
        let covered = whole.or_else(|| match shape {
            Shape::Row(f) => f.iter().find_map(|f| f.rule),
            _ => None,
        });
        match (binary, covered) {
            (true, c) => self.null(c.or(Some(usize::MAX))),
            (false, Some(rule)) => self.replace(rule, TypeHint::Text, v, out),
            (false, None) => self.masks.mask_value(v, TypeHint::Text, out, self.counts),
        }
    }

    fn json(&mut self, whole: Option<usize>, v: &[u8], out: &mut Vec<u8>) -> Masked {
        match whole {
            Some(rule) => self.replace(rule, TypeHint::Json, v, out),
            None => self.masks.mask_value(v, TypeHint::Json, out, self.counts),
        }
    }

    /// The rule's replacement for `v`.
    fn replace(&mut self, rule: usize, hint: TypeHint, v: &[u8], out: &mut Vec<u8>) -> Masked {
        self.masks
            .mask_with(ColumnPlan::Whole { rule, hint }, v, out, self.counts)
    }

    /// NULL, counted under `rule` (`None`: the value carries nothing to count).
    fn null(&mut self, rule: Option<usize>) -> Masked {
        let Some(rule) = rule else {
            return Masked::Null;
        };
        let whole = ColumnPlan::Whole {
            rule,
            hint: TypeHint::Other,
        };
        self.masks
            .mask_with(whole, &[], &mut Vec::new(), self.counts)
    }

    /// A number in decimal text: NULL when it is a card number.
    fn card(&mut self, digits: &[u8]) -> Masked {
        if !self.card {
            return Masked::Unchanged;
        }
        let plan = ColumnPlan::Scan(TypeHint::Numeric);
        self.masks
            .mask_with(plan, digits, &mut Vec::new(), self.counts)
    }

    /// A binary int2/int4/int8.
    fn binary_int(&mut self, width: u8, v: &[u8]) -> Masked {
        if !self.card || width < 8 {
            // 13 digits at least make a card: only int8 can hold one.
            return Masked::Unchanged;
        }
        let Some(b) = v.first_chunk::<8>().filter(|_| v.len() == 8) else {
            return self.null(Some(usize::MAX));
        };
        let n = i64::from_be_bytes(*b);
        let Ok(n) = u64::try_from(n) else {
            return Masked::Unchanged;
        };
        let mut buf = [0u8; 20];
        let text = decimal(n, &mut buf);
        self.card(text)
    }

    /// A binary numeric: checked when it is a non-negative integer of display scale 0 (what
    /// its text form would show as bare digits).
    fn binary_numeric(&mut self, v: &[u8]) -> Masked {
        if !self.card {
            return Masked::Unchanged;
        }
        let mut buf = [0u8; 40];
        match numeric_digits(v, &mut buf) {
            Ok(Some(text)) => self.card(text),
            Ok(None) => Masked::Unchanged,
            Err(Unreadable) => self.null(Some(usize::MAX)),
        }
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// The digits of a binary numeric that is a non-negative integer shown with no decimals
/// (`None` otherwise, or when it is too long to be a card number).
fn numeric_digits<'b>(v: &[u8], buf: &'b mut [u8; 40]) -> Result<Option<&'b [u8]>, Unreadable> {
    let h = |i: usize| {
        v.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(Unreadable)
    };
    let (ndigits, weight, sign, dscale) = (h(0)?, h(2)? as i16, h(4)?, h(6)?);
    if v.len() != 8 + 2 * usize::from(ndigits) {
        return Err(Unreadable);
    }
    if sign != 0 || dscale != 0 || !(0..=8).contains(&weight) {
        return Ok(None);
    }
    let group = |i: usize| {
        if i < usize::from(ndigits) {
            h(8 + 2 * i)
        } else {
            Ok(0)
        }
    };
    // Groups past the decimal point must all be zero for an integer.
    for i in (weight as usize + 1)..usize::from(ndigits) {
        if group(i)? != 0 {
            return Ok(None);
        }
    }
    let mut len = 0;
    for i in 0..=weight as usize {
        let g = group(i)?;
        if g > 9999 {
            return Err(Unreadable);
        }
        for (k, d) in [g / 1000, g / 100 % 10, g / 10 % 10, g % 10]
            .into_iter()
            .enumerate()
        {
            // Leading zeros of the first group are not written.
            if len == 0 && d == 0 && !(i == weight as usize && k == 3) {
                continue;
            }
            buf[len] = b'0' + d as u8;
            len += 1;
        }
    }
    Ok(Some(&buf[..len]))
}
