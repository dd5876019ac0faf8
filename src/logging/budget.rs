//! A per-connection budget for complaint lines (refused filters, dropped or
//! denied publishes): a hostile client must not be able to turn each small
//! packet into a log line. The first [`Complaints::LINES`] complaints of a
//! connection are written; the next one says that the rest are not.

/// Complaints logged so far for one connection (one byte: it lives in every
/// connection's state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Complaints(u8);

/// What to do with one complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Log,
    /// Write it, then a line saying further complaints are not logged.
    LogLast,
    /// Budget spent: do not write it.
    Quiet,
}

impl Complaints {
    /// Complaint lines written per connection.
    pub const LINES: u8 = 20;

    /// Count one complaint and say whether to write it.
    pub fn count(&mut self) -> Verdict {
        match self.0 {
            n if n + 1 < Self::LINES => {
                self.0 += 1;
                Verdict::Log
            }
            n if n + 1 == Self::LINES => {
                self.0 += 1;
                Verdict::LogLast
            }
            _ => Verdict::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_gets_a_fixed_number_of_lines() {
        let mut c = Complaints::default();
        let verdicts: Vec<Verdict> = (0..100).map(|_| c.count()).collect();
        let logged = verdicts.iter().filter(|v| **v != Verdict::Quiet).count();
        assert_eq!(logged, usize::from(Complaints::LINES));
        assert_eq!(
            verdicts[usize::from(Complaints::LINES) - 1],
            Verdict::LogLast
        );
        assert!(verdicts[..usize::from(Complaints::LINES) - 1]
            .iter()
            .all(|v| *v == Verdict::Log));
    }
}
