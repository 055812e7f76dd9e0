-- public.portal_sync_log: the batch's rows, in stream order. An
-- organization id the batch did not read is looked up by the portal id;
-- $13 the sources and $14 the changes, as JSON (NULL: none recorded).
-- No ON CONFLICT: a concurrent duplicate violates the one-done-row-per-
-- event index, and the batch retries.
INSERT INTO public.portal_sync_log
  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail, member_created,
   occurred_at, received_at, stream_seq, attempt, source, changes)
SELECT t.eid, t.typ, t.mem, t.porg,
       coalesce(t.oid, (SELECT o.id FROM public.organizations o WHERE o.portal_org_id = t.porg)),
       t.st, t.det, t.cr, t.occ, t.rec, t.seq, t.att, t.src, t.chg::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]::uuid[], $6::text[], $7::text[], $8::bool[],
            $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::int[],
            $13::text[], $14::text[])
  AS t(eid, typ, mem, porg, oid, st, det, cr, occ, rec, seq, att, src, chg)
