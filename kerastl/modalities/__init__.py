"""The built-in modalities: `image`, `audio` and `text`, each one `kerastl.core.modality.Modality` registered when
its module is imported. The registry imports them on first use; a new input type is one more module like them.
"""
