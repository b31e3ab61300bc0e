"""Machine-readable reason codes for quarantined records, in the order cleaning checks them.

A record with several problems is quarantined once, under the first reason in this order.
"""

from enum import Enum


class Reason(str, Enum):
    # the file cannot be read at all: broken Parquet, a CSV header naming a column twice or that is no
    # UTF-8 text (a UTF-16 file)
    unreadable_file = "unreadable_file"
    # the line is no record: not valid UTF-8, holds a control character or no visible character, or does
    # not split into the expected fields (wrong field count, broken quoting, not a JSON object)
    unparsable_line = "unparsable_line"
    missing_column = "missing_column"  # the file lacks a column the spec requires: whole file quarantined
    wrong_type = "wrong_type"  # a value does not parse as its declared type
    id_too_long = "id_too_long"  # the id is longer than kennel.spec.MAX_ID_LENGTH characters (serving's limit)
    missing_required = "missing_required"  # id, timestamp or a non-nullable feature is empty (not the label)
    invalid_label = "invalid_label"  # a label given (not blank) that is neither the positive nor the negative value
    out_of_range = "out_of_range"  # numeric value outside the spec's min/max
    unknown_category = "unknown_category"  # categorical value not in the spec's categories
    # a learned categorical value that can be no category: longer than kennel.spec.MAX_CATEGORY_LENGTH
    # characters, or holding a control or invisible character (kennel.spec.category_text_problem)
    invalid_category = "invalid_category"
    timestamp_outside_partition = "timestamp_outside_partition"  # event day differs from the file's day
    duplicate_id = "duplicate_id"  # an older (or identical) copy of a record whose latest version is kept


REASON_ORDER = list(Reason)
