"""The organisation: centre → unit (进驻部门) → window (counter) → workstation; staff, posts and accounts over time."""
