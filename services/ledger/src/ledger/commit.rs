//! The commit path: submissions go through the verifier to the committer, which commits
//! groups of transfers in one store transaction each (one by one if a group cannot commit).

use super::*;

impl Ledger {
    /// Submits transfers (decoded at the boundary, or refused there). Each gets its own
    /// result, in order. Signatures are verified in batches shared with concurrent callers;
    /// the verifier hands each batch's valid transfers on to the committer stage together,
    /// which puts many transfers (also from concurrent callers) into one store transaction.
    pub async fn submit(
        &self,
        transfers: Vec<Result<Transfer, Reject>>,
    ) -> Vec<Result<Committed, ServiceError>> {
        self.submit_in(Lane::Bulk, transfers).await
    }

    /// [`Ledger::submit`] in `lane` of the verifier and the committer: a wallet's single
    /// call goes in the priority lane, ahead of queued batches.
    pub async fn submit_in(
        &self,
        lane: Lane,
        transfers: Vec<Result<Transfer, Reject>>,
    ) -> Vec<Result<Committed, ServiceError>> {
        let mut results: Vec<Option<Result<Committed, ServiceError>>> =
            Vec::with_capacity(transfers.len());
        let mut to_check = Vec::new();
        let mut slots = Vec::new();
        for (i, t) in transfers.into_iter().enumerate() {
            let t = match t {
                Ok(t) => self.check_destinations(&t).await.map(|()| t),
                Err(r) => Err(r),
            };
            match t {
                Ok(t) => {
                    results.push(None);
                    slots.push(i);
                    to_check.push(t);
                }
                Err(r) => results.push(Some(Err(r.into()))),
            }
        }
        let unavailable = |e: &dyn std::fmt::Display| ServiceError::Unavailable(e.to_string());
        let verdicts = match self.inner.verifier.check_and_commit(to_check, lane).await {
            Ok(v) => v,
            Err(stopped) => {
                return results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(unavailable(&stopped))))
                    .collect();
            }
        };
        let mut queued = Vec::new();
        let mut expired = Vec::new();
        for (slot, verdict) in slots.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Queued(ticket) => queued.push((slot, ticket)),
                // A committed transfer resubmitted after it expired gets the same answer.
                Verdict::Refused(t, r @ Reject::Expired { .. }) => {
                    expired.push((slot, t.txid(), r))
                }
                Verdict::Refused(_, r) => results[slot] = Some(Err(r.into())),
                Verdict::Valid(_) => {
                    results[slot] = Some(Err(ServiceError::Internal(
                        "the verifier did not queue a valid transfer".into(),
                    )))
                }
            }
        }
        for (slot, txid, reject) in expired {
            results[slot] = Some(match self.committed(&txid).await {
                Ok(Some(c)) => Ok(c),
                Ok(None) => Err(reject.into()),
                Err(e) => Err(e),
            });
        }
        for (slot, ticket) in queued {
            results[slot] = Some(match ticket.await.ok().and_then(|mut r| r.pop()) {
                Some(r) => r,
                None => Err(unavailable(&Stopped("committer"))),
            });
        }
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.expect("every slot filled"))
            .collect();
        for r in &results {
            match r {
                Ok(_) => {}
                Err(ServiceError::Reject(reject)) => self
                    .inner
                    .metrics
                    .rejected
                    .with_label_values(&[cbdc_proto::convert::reject_code(reject)])
                    .inc(),
                Err(_) => self
                    .inner
                    .metrics
                    .rejected
                    .with_label_values(&["OTHER"])
                    .inc(),
            }
        }
        results
    }

    /// The committed result of `txid`, if it was committed.
    pub async fn committed(&self, txid: &Txid) -> Result<Option<Committed>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        Ok(
            match tx.get_snapshot(&self.layout().transfer(txid)).await? {
                None => None,
                Some(bytes) => {
                    let r = TransferRecord::decode(&bytes)?;
                    Some(Committed {
                        txid: *txid,
                        position: r.position,
                        committed_at_ms: r.committed_at_ms,
                        already: true,
                    })
                }
            },
        )
    }

    /// Commits one transfer that passed the stateless checks. `request` is an order's
    /// request id: read (with a conflict) and recorded with the txid in the same
    /// transaction, so one request id commits at most one transfer even when two attempts
    /// race; a request already done answers with its transfer, one with other content is
    /// `ALREADY_EXISTS`.
    pub(super) async fn commit(
        &self,
        transfer: Transfer,
        request: Option<Seen>,
    ) -> Result<Committed, ServiceError> {
        let transfer = Arc::new(transfer);
        let now_ms = self.now_ms();
        let t = Arc::clone(&transfer);
        let outcome = self
            .transact_stamped(move |me, tx| {
                let t = Arc::clone(&t);
                let request = request.clone();
                Box::pin(async move {
                    if let Some(seen) = &request
                        && let Some(done) = seen.first_result(tx).await?
                    {
                        let txid = Txid(
                            done.try_into()
                                .map_err(|_| corrupt(Corrupt { what: "request" }))?,
                        );
                        let record =
                            tx.get(&me.layout().transfer(&txid)).await?.ok_or_else(|| {
                                corrupt(Corrupt {
                                    what: "request's transfer",
                                })
                            })?;
                        let record = TransferRecord::decode(&record).map_err(corrupt)?;
                        return Ok((Applied::Already(record), txid));
                    }
                    let applied = me.apply(tx, &t, now_ms, 0).await?;
                    if let Applied::New(_, delta) = &applied {
                        me.write_log(tx, &[(t.txid(), delta.clone())])?;
                        if let Some(seen) = &request {
                            seen.record(tx, &t.txid().0)?;
                        }
                    }
                    Ok((applied, t.txid()))
                })
            })
            .await;
        let ((applied, txid), stamp) = outcome?;
        Ok(self.finish(txid, applied, stamp.0, 0, now_ms))
    }

    /// Commits transfers that passed the stateless checks in one store transaction, each
    /// validated against the state the earlier ones left (a double spend inside the group is
    /// refused like any other). If the group cannot commit (conflicts past the retry bound, or
    /// a limit), each transfer commits on its own instead.
    pub(super) async fn commit_group(
        &self,
        transfers: Vec<Transfer>,
    ) -> Vec<Result<Committed, ServiceError>> {
        if transfers.len() == 1 {
            let t = transfers.into_iter().next().expect("one");
            return vec![self.commit(t, None).await];
        }
        // The same transfer twice in a group: commit it once, answer both.
        let mut index_of: std::collections::HashMap<Txid, usize> = Default::default();
        let mut unique: Vec<Transfer> = Vec::with_capacity(transfers.len());
        let mut slot_of = Vec::with_capacity(transfers.len());
        let mut repeat = Vec::with_capacity(transfers.len());
        for t in transfers {
            match index_of.get(&t.txid()) {
                Some(&i) => {
                    slot_of.push(i);
                    repeat.push(true);
                }
                None => {
                    index_of.insert(t.txid(), unique.len());
                    slot_of.push(unique.len());
                    repeat.push(false);
                    unique.push(t);
                }
            }
        }
        let group = Arc::new(unique);
        let now_ms = self.now_ms();
        let g = Arc::clone(&group);
        let outcome = self
            .transact_stamped(move |me, tx| {
                let g = Arc::clone(&g);
                Box::pin(async move {
                    let mut results = Vec::with_capacity(g.len());
                    let mut order: u16 = 0;
                    let mut logged = Vec::with_capacity(g.len());
                    for t in g.iter() {
                        let r = me.apply(tx, t, now_ms, order).await;
                        let r = in_order(&mut order, r)?;
                        if let Ok((Applied::New(_, delta), _)) = &r {
                            logged.push((t.txid(), delta.clone()));
                        }
                        results.push(r);
                    }
                    me.write_log(tx, &logged)?;
                    Ok::<_, TxError<ServiceError>>(results)
                })
            })
            .await;
        let unique_results: Vec<Result<Committed, ServiceError>> = match outcome {
            Ok((results, stamp)) => results
                .into_iter()
                .zip(group.iter())
                .map(|(r, t)| {
                    r.map(|(applied, order)| self.finish(t.txid(), applied, stamp.0, order, now_ms))
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %ServiceError::from(e), size = group.len(), "group commit failed; committing one by one");
                let group = Arc::try_unwrap(group).unwrap_or_else(|g| (*g).clone());
                let singles = group.into_iter().map(|t| {
                    let me = self.clone();
                    async move { me.commit(t, None).await }
                });
                futures::future::join_all(singles).await
            }
        };
        slot_of
            .into_iter()
            .zip(repeat)
            .map(|(i, again)| match &unique_results[i] {
                Ok(c) => Ok(Committed {
                    already: c.already || again,
                    ..*c
                }),
                Err(e) => Err(e.clone()),
            })
            .collect()
    }

    pub(super) fn finish(
        &self,
        txid: Txid,
        applied: Applied,
        stamp: [u8; STAMP_LEN],
        order: u16,
        now_ms: u64,
    ) -> Committed {
        let position = position(stamp, order);
        match applied {
            Applied::Already(record) => Committed {
                txid,
                position: record.position,
                committed_at_ms: record.committed_at_ms,
                already: true,
            },
            Applied::New(lines, _) => {
                self.inner.metrics.committed.inc();
                self.inner
                    .events
                    .publish(Arc::new(CommitEvent { position, lines }));
                Committed {
                    txid,
                    position,
                    committed_at_ms: now_ms,
                    already: false,
                }
            }
        }
    }
}
