-- public.portal_sync_log: the last success per organization and its
-- successes in the last 24 hours, newest first, at most 50.
SELECT o.portal_org_id, max(l.processed_at),
       count(*) FILTER (WHERE l.processed_at > now() - interval '24 hours')
FROM public.portal_sync_log l JOIN public.organizations o ON o.id = l.organization_id
WHERE l.status = 'success'
GROUP BY o.portal_org_id ORDER BY 2 DESC LIMIT 50
