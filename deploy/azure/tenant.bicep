// Per-tenant resources of skycrawl on Azure, deployed by adapters/azure/provisioner.py
// (ArmProvisioner) as the deployment "skycrawl-tenant-<tenant>-<hash>" in the shared
// resource group. The provisioner deploys tenant.json, the compiled form of this file:
// after editing, run `az bicep build --file tenant.bicep --outfile tenant.json` (the test
// tests/integration/azure/test_templates.py checks that the two declare the same
// parameters, resources and outputs).
//
// Everything lives in the shared storage account (and the shared Service Bus namespace): the
// tenant's table, results container and dispatch topic (with its dead-letter queue). An
// empty table, container, topic or queue costs nothing.

@description('The skycrawl tenant id (recorded in the container metadata).')
param tenantId string

@description('The shared storage account of the deployment.')
param storageAccountName string

@description('The tenant\'s table (its database); alphanumeric, 3-63 characters.')
param tableName string

@description('The tenant\'s blob container (its results).')
param containerName string

@description('The tenant\'s dispatch topic (core.layout.tenant_topic: SKYCRAWL_DISPATCH_TOPIC, a dash, the tenant).')
param dispatchTopicName string

@description('The Service Bus namespace of the deployment\'s bus; empty: the Storage-queue bus (the topic is then its dead-letter queue <topic>-poison, and one queue per subscription).')
param serviceBusNamespaceName string = ''

@description('Principal id of the engine identity, granted Data Owner on this topic and Sender on its dead-letter queue; empty: no role assignment.')
param engineIdentityPrincipalId string = ''

var useServiceBus = !empty(serviceBusNamespaceName)
var grantEngine = useServiceBus && !empty(engineIdentityPrincipalId)
var serviceBusDataOwner = '090c5cfd-751d-490a-894a-3ce6f1109419'
var serviceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tableName
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
    metadata: {
      skycrawltenant: tenantId
    }
  }
}

resource storagePoison 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (!useServiceBus) {
  parent: queueService
  name: '${dispatchTopicName}-poison'
  properties: {
    metadata: {
      skycrawltenant: tenantId
    }
  }
}

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' existing = if (useServiceBus) {
  name: serviceBusNamespaceName
}

resource dispatchTopic 'Microsoft.ServiceBus/namespaces/topics@2021-11-01' = if (useServiceBus) {
  parent: namespace
  name: dispatchTopicName
}

resource dispatchDeadLetters 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = if (useServiceBus) {
  parent: namespace
  name: '${dispatchTopicName}-dlq'
  properties: {
    lockDuration: 'PT1M'
  }
}

resource engineTopicRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantEngine) {
  name: guid(tenantId, dispatchTopicName, serviceBusDataOwner)
  scope: dispatchTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataOwner)
    principalId: engineIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource engineDeadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantEngine) {
  name: guid(tenantId, dispatchTopicName, serviceBusDataSender)
  scope: dispatchDeadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
    principalId: engineIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output tableName string = tableName
output tableId string = table.id
output containerName string = containerName
output containerId string = container.id
output dispatchTopicName string = dispatchTopicName
output dispatchTopicId string = useServiceBus ? dispatchTopic.id : ''
output dispatchDeadLetterId string = useServiceBus ? dispatchDeadLetters.id : storagePoison.id
