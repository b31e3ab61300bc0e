"""Kennel's domain code: plain Python with no Dagster import (the Bento service imports it too)."""
