"""Liveness and model listing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from clawdbot.api.dependencies import Resources, get_resources
from clawdbot.api.schemas import model_dict

router = APIRouter()


@router.get("/healthz", include_in_schema=True)
async def healthz(res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
    return {"status": "ok", "model": res.backend.model_id}


@router.get("/v1/models")
async def list_models(res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
    return {"object": "list", "data": [model_dict(res.backend.model_id, res.loaded_at)]}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
    from clawdbot.exceptions import NotFoundError

    if model_id != res.backend.model_id:
        raise NotFoundError(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return model_dict(model_id, res.loaded_at)
