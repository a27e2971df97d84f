"""A local stand-in for WeChat Pay v3 and Alipay, speaking their published wire formats.

It shares no code with ``coordinator.payments.providers``: it is the other side of the wire.
"""
