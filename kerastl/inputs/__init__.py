"""What each built-in input type is made of: the layers baked into models (`ImagePreprocessing`,
`LogMelSpectrogram`, speech_embedding's `SpeechEmbeddingMel` and aiSFX's `SfxLogMel`, the text tokenizer), file decoding and the
stateless augmentation. Building blocks only: which of them a model, a folder or an export uses is decided by
its modality (`kerastl.core.modality`, implemented in `kerastl.modalities`)."""
