"""Cross-cutting helpers with no domain knowledge: the :class:`InputError` every layer raises for bad input,
and the progress/cancel protocol (``progress(fraction, message)``) long work reports through.
"""
