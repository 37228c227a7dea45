//! Number scope claims: the number's home shard (the shard of `ScopeKey::Number(n)`)
//! decides, in its log order, which limit scope a number gets at its first
//! registration, so that two first registrations racing with different scopes cannot
//! register it in two shards (two limits for one number: R3.4, docs/rules.md). The
//! server claims before it registers a number no shard knows, and registers in the
//! scope the claim answers.

use super::*;

impl Engine {
    /// [`Command::ClaimScope`]: the scope that holds for `number`. In order: the claim
    /// already made, the scope of the number registered on this shard (its claim was
    /// dropped at registration, or it registered before claims existed), else
    /// `scope`, which is claimed now.
    pub(super) fn claim_scope(
        &mut self,
        number: NumberId,
        scope: ScopeKey,
    ) -> Result<Output, CoreError> {
        if let ScopeKey::Number(n) = &scope {
            if *n != number {
                return Err(CoreError::invalid(
                    "scope",
                    "a number-scoped claim must name the claimed number",
                ));
            }
        }
        if let Some(held) = self.shared.claims.get(&number) {
            return Ok(Output::Claimed {
                scope: held.clone(),
            });
        }
        if let Some(n) = self.shared.numbers.get(&number) {
            // registered here: the record answers (no claim kept beside it)
            return Ok(Output::Claimed {
                scope: n.scope_key.clone(),
            });
        }
        self.shared.claims.insert(number, scope.clone());
        Ok(Output::Claimed { scope })
    }

    /// A claim on this shard for another scope than `key`: creating `number` in `key`
    /// here would count it in a second scope (its home shard gave it `key`'s rival).
    pub(super) fn check_claim(&self, number: &NumberId, key: &ScopeKey) -> Result<(), CoreError> {
        match self.shared.claims.get(number) {
            Some(held) if *held != *key => Err(CoreError::Conflict(format!(
                "number: number {number}'s limit scope is already claimed as {}; \
                 register it under that scope",
                describe(&held)
            ))),
            _ => Ok(()),
        }
    }
}

/// A scope as an admin names it.
fn describe(s: &ScopeKey) -> String {
    match s {
        ScopeKey::Number(n) => format!("the number itself ({n})"),
        ScopeKey::Portfolio(p) => format!("portfolio {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Ts;

    fn claim(e: &mut Engine, number: NumberId, scope: ScopeKey) -> Result<ScopeKey, CoreError> {
        match e.apply(Command::ClaimScope { number, scope }, Ts(1))? {
            Output::Claimed { scope } => Ok(scope),
            other => panic!("{other:?}"),
        }
    }

    fn ids() -> (NumberId, ScopeKey, ScopeKey, ScopeKey) {
        let n = NumberId::parse("n", "15550001234").unwrap();
        let p = |s: &str| ScopeKey::Portfolio(PortfolioId::parse("p", s).unwrap());
        (n, ScopeKey::Number(n), p("acme"), p("other"))
    }

    fn register(
        e: &mut Engine,
        n: NumberId,
        profile: &str,
        portfolio: Option<&str>,
    ) -> Result<Output, CoreError> {
        let reg = NumberRegistration {
            number: Some(n),
            portfolio: portfolio.map(|p| PortfolioId::parse("p", p).unwrap()),
            profile: Some(profile.into()),
            ..Default::default()
        };
        e.apply(Command::RegisterNumber(reg), Ts(2))
    }

    /// Two first registrations racing with different scopes: the first claim holds,
    /// the second is answered the first's scope; the same claim again answers the
    /// same (a retry is harmless).
    #[test]
    fn the_first_claim_holds_against_a_rival() {
        for (first, second) in [(1, 2), (2, 1), (2, 3)] {
            let (n, by_number, acme, other) = ids();
            let scopes = [by_number.clone(), acme, other];
            let (first, second) = (&scopes[first - 1], &scopes[second - 1]);
            let mut e = Engine::new();
            assert_eq!(claim(&mut e, n, first.clone()).unwrap(), *first);
            assert_eq!(claim(&mut e, n, second.clone()).unwrap(), *first);
            assert_eq!(claim(&mut e, n, first.clone()).unwrap(), *first);
            assert_eq!(e.reader().claim_of(&n), Some(first.clone()));
        }
    }

    /// A number registered here before claims existed holds its registered scope.
    #[test]
    fn a_registered_number_holds_its_scope() {
        let (n, by_number, acme, _) = ids();
        let mut e = Engine::new();
        register(&mut e, n, "seeds", None).unwrap();
        assert_eq!(claim(&mut e, n, acme).unwrap(), by_number);
    }

    /// A claim followed by the registration it allowed, on the same shard: the
    /// registration answers later claims, so the claim itself is dropped (a table
    /// entry a number less); a rival claim still gets the registered scope.
    #[test]
    fn a_registration_on_the_claiming_shard_replaces_its_claim() {
        let (n, by_number, acme, _) = ids();
        let mut e = Engine::new();
        assert_eq!(claim(&mut e, n, by_number.clone()).unwrap(), by_number);
        assert_eq!(e.shared.claims.len(), 1);
        register(&mut e, n, "seeds", None).unwrap();
        assert_eq!(e.shared.claims.len(), 0);
        assert_eq!(e.reader().scope_of(&n), Some(by_number.clone()));
        assert_eq!(claim(&mut e, n, acme).unwrap(), by_number);
        // answering from the record wrote no claim back
        assert_eq!(e.shared.claims.len(), 0);
    }

    /// On the home shard, a number-scoped registration of a number claimed for a
    /// portfolio is refused and changes nothing; one in the claimed scope is taken.
    #[test]
    fn a_registration_respects_the_claim() {
        let (n, by_number, acme, _) = ids();
        let mut e = Engine::new();
        claim(&mut e, n, acme.clone()).unwrap();
        let before = e.snapshot();
        let err = register(&mut e, n, "seeds", None).unwrap_err();
        assert!(
            matches!(&err, CoreError::Conflict(m) if m.starts_with("number:") && m.contains("acme")),
            "{err:?}"
        );
        assert_eq!(e.reader().scope_of(&n), None);
        // the refused command still counts as applied (log position) but holds nothing
        let after = e.snapshot();
        assert_eq!(
            Engine::restore(&after).unwrap().reader().numbers(),
            Engine::restore(&before).unwrap().reader().numbers()
        );
        assert_eq!(
            register(&mut e, n, "meta", Some("acme")).unwrap(),
            Output::Registered
        );
        assert_eq!(e.reader().scope_of(&n), Some(acme));
        // and the other way round
        let mut e = Engine::new();
        claim(&mut e, n, by_number.clone()).unwrap();
        assert!(register(&mut e, n, "meta", Some("acme")).is_err());
        register(&mut e, n, "seeds", Some("acme")).unwrap();
        assert_eq!(e.reader().scope_of(&n), Some(by_number));
    }

    #[test]
    fn a_number_scope_claim_names_its_own_number() {
        let (n, _, _, _) = ids();
        let m = NumberId::parse("n", "1").unwrap();
        let mut e = Engine::new();
        let err = claim(&mut e, n, ScopeKey::Number(m)).unwrap_err();
        assert!(
            matches!(&err, CoreError::Invalid { field, .. } if field == "scope"),
            "{err:?}"
        );
        assert_eq!(e.reader().claim_of(&n), None);
    }
}
