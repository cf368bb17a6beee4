"""Analog hardware models as pure tensor functions: memristive crossbar synapses (:mod:`.crossbar`) and analog
neuron integration curves (:mod:`.neuron`). They sit low in the package graph (they import only
:mod:`spikeforge.core`) so that both the layers in :mod:`spikeforge.nn` and the analog targets can use them."""
