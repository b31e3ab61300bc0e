-- The feature table the training set is cut from: one row per record id across all days (an id
-- landed on two days keeps its latest version), plus calendar features for analysis.
with ranked as (
    select
        *,
        row_number() over (partition by record_id order by event_ts desc, event_date desc) as version_rank
    from {{ ref('stg_records') }}
)
select
    * exclude (version_rank),
    extract(dow from event_ts) as event_day_of_week,
    extract(hour from event_ts) as event_hour
from ranked
where version_rank = 1
