"""`hsepay bench`: the scenarios of DESIGN §9, each on scratch databases and topics of its own.

Kept free of imports: the load-generating processes (`python -m hsepay.bench.loadgen`) import this
package and should start in a blink. Callers import the modules they need.
"""
