//! The account's invariants, stated positively. [`Account::check_invariants`]
//! verifies exactly these, after every transition:
//! 1. every bucket holds between nothing and what was granted into it
//!    (`0 <= remaining <= granted`): no balance is ever negative;
//! 2. every bucket was opened by an entry already written (`granted_by <= seq`);
//! 3. every bucket id appears once: one bucket per meter and month, one
//!    trial and one purchased pool per meter;
//! 4. usage this period is never negative.
//!
//! What the account alone cannot show (entries numbered 1, 2, 3, ... with no
//! gap; each meter's balance equal to the sum of its entries' lines, each
//! entry's `balance_after` the running sum) holds by construction of
//! [`Account::record`] and is checked over whole ledgers by the property
//! test in `account.rs` and the integration tests.

use std::collections::BTreeSet;

use crate::account::Account;
use crate::DomainError;

impl Account {
    pub fn check_invariants(&self) -> Result<(), DomainError> {
        let violated = |what: String| Err(DomainError::InvariantViolated(what));
        let mut ids = BTreeSet::new();
        for b in &self.buckets {
            let holds_what_was_granted = !b.remaining.is_negative() && b.remaining <= b.granted;
            if !holds_what_was_granted {
                return violated(format!(
                    "bucket {} holds {} of {} granted",
                    b.id, b.remaining, b.granted
                ));
            }
            if b.granted_by > self.seq {
                return violated(format!("bucket {} opened by a future entry", b.id));
            }
            if !ids.insert(&b.id) {
                return violated(format!("bucket {} appears twice", b.id));
            }
        }
        if let Some((meter, used)) = self.used_this_period.iter().find(|(_, u)| u.is_negative()) {
            return violated(format!("meter {meter} used {used} this period"));
        }
        Ok(())
    }
}
