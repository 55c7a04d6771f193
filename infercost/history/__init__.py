"""The results history: points over time per instance x case x metric (points.py), the store that
keeps them (store.py), the change-point detector (detect.py) and what it finds (changes.py)."""
