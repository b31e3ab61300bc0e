-- One row per clean record, with the spec's roles given fixed names so later models and tests
-- do not depend on the data set's own column names.
{%- set k = var('kennel') %}
select
    cast({{ adapter.quote(k['id_column']) }} as varchar) as record_id,
    cast({{ adapter.quote(k['timestamp_column']) }} as timestamp) as event_ts,
    cast("date" as date) as event_date,
    cast({{ adapter.quote(k['label_column']) }} as integer) as label
    {%- for col in k['feature_columns'] %},
    {{ adapter.quote(col) }}
    {%- endfor %}
from {{ source('kennel_lake', 'clean') }}
