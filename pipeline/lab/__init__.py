"""The lab: experiment records and tables, LFW View 2, fusion and screenshots (`python -m pipeline.lab`).
No stage or library of pipeline/ imports it; it may import any of them."""
