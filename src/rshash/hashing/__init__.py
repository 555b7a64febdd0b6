"""Hashing network (recurrent head over hierarchical features) and its losses."""
